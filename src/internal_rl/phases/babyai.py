"""The internal-RL pipeline on a BabyAI level (minigrid), end to end in one run folder.

    BabyAI bot demos ──► pretrain (frozen base) ──► discover (metacontroller) ──► internal RL (GRPO | ES)

1. data:     minigrid's BabyAI bot on episode seeds [s·10⁷, s·10⁷ + num_demos) → ``data/D`` (+ ``D_heldout``;
             ε-noisy if ``eps`` > 0) and on [s·10⁷ + 2·10⁶, + num_demos_star) → ``data/D_star`` (+
             ``D_star_heldout``, ε = 0). D* is a separate set of episodes: the metacontroller must not train
             on episodes the base model has memorised (on those the base predicts the bot almost perfectly,
             and z has nothing to add). ``subgoals`` = index of the mission clause the bot pursues.
2. pretrain: ``phases.pretrain.run_pretrain`` with a linear-encoder ``SequenceModelConfig`` for the BabyAI
             observation (envs/babyai.py) and the six minigrid actions the bot uses.
3. discover: ``phases.discover.run_discover`` on D* (frozen base); its held-out switch F1 against the
             bot's clause boundaries is the segmentation result, here also at tolerances 0, 1 and 2.
4. internal RL, GRPO: the latent policy π(z | e at switches) acts through ``rl.option_env.OptionCore``
             driving ``BatchedBabyAI``. Each iteration plays ``rl_groups`` fresh seeds ``rl_group_size``
             times each; the advantage of an episode is its return normalised within its group,
             A = (R − mean_group R) / (std_group R + δ), shared by all its decisions, and the update is
             the clipped PPO step of ``rl.ppo.ppo_update`` with ``group_size`` = ``rl_group_size``. (Until
             session 12 the group advantages were normalised over the batch a second time, which rescaled
             them by one positive number per batch; the figures in docs/RESULTS.md are from then.)
5. internal RL, ES: ``rl.es.evolve`` (antithetic OpenAI-ES, centred ranks) over the same latent policy's
             parameters; a member's fitness is its success rate on ``es_episodes`` fresh seeds (the same
             seeds and sampling noise for every member of a generation).

RL and evaluation run on ``rl_level`` (default: the demonstrations' level). Every method plays the same
``eval_episodes`` held-out seeds 2³⁰ + 0, 1, ... (never used for demos or training), sampling its
actions (BC) or codes z (internal RL) as in training.

With the mission in the observation (the default) the base model has, in its own inputs, what the
bot's plan depends on, so the metacontroller may find little worth encoding in z (KL near 0, β rarely
above 0.5). ``n_slots=0`` hides the mission, as the task is hidden in gridworld-pinpad, the setting the
paper's subgoal discovery is built for. Success within ``max_steps`` is a lenient measure on small
levels: a "go to" clause is met whenever the agent faces any matching object, so wandering from object
to object completes many missions (compare the BC score with ``n_slots=0``).
Writes ``<out>/babyai_results.json``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from internal_rl.analysis.segmentation import segmentation_metrics
from internal_rl.envs.babyai import DEFAULT_LEVEL, NUM_ACTIONS, BabyAIEnvConfig, BatchedBabyAI
from internal_rl.models.sequence_model import SequenceModel, SequenceModelConfig, freeze
from internal_rl.phases.common import MetricsLogger, set_seed, set_threads, to_jsonable, write_json

EVAL_SEED_BASE = 2**30
"""Held-out evaluation episodes use seeds EVAL_SEED_BASE + 0, 1, ...; training seeds stay below 2³⁰."""
PRESETS = ("smoke", "quick")


@dataclass
class BabyAIConfig:
    """BabyAI pipeline: bot demos → pretrain → discover → internal RL (GRPO) and ES."""

    out: str = "runs/babyai"
    """Run folder: data/, pretrain/, discover/, rl_grpo/, rl_es/ and babyai_results.json."""
    level: str = DEFAULT_LEVEL
    """BabyAI level (a registered minigrid id), e.g. BabyAI-GoToSeqS5R2-v0 or BabyAI-GoToSeq-v0."""
    max_steps: int = 64
    """Episode length limit T (the bot completes all but ~0.02% of GoToSeqS5R2 episodes within 64 steps)."""
    n_slots: int = 4
    """Mission clauses encoded in the observation (0: the mission is hidden)."""
    rl_level: str = ""
    """Level for internal RL and every evaluation ('' = ``level``); its missions must fit ``n_slots``."""
    num_demos: int = 5000
    """Bot episodes generated for D (pretraining), before the held-out split."""
    num_demos_star: int = 1000
    """Bot episodes (ε = 0, other seeds) generated for D* (discovery), before the held-out split."""
    heldout_fraction: float = 0.1
    """Fraction of D and of D* kept apart (D_heldout, D_star_heldout)."""
    eps: float = 0.0
    """Probability of a random move in the demonstrations of D (D* is always ε=0)."""
    demo_batch: int = 64
    """Episodes the bot plays at once."""
    d_model: int = 128
    """Base model: residual-stream width."""
    depth: int = 4
    """Base model: transformer blocks (the metacontroller sits at depth // 2)."""
    n_heads: int = 4
    """Base model: attention heads."""
    head_dim: int = 32
    """Base model: width of each head."""
    mlp_hidden: int = 256
    """Base model: MLP hidden width."""
    prev_action_input: bool = True
    """Feed a_{t−1} to the base model (the view is egocentric and partial)."""
    pretrain_steps: int = 1200
    """Pretraining: AdamW steps (cosine schedule)."""
    pretrain_batch: int = 64
    """Pretraining: episodes per batch."""
    pretrain_lr: float = 1e-3
    """Pretraining: peak learning rate."""
    obs_weight: float = 0.01
    """Pretraining: λ, weight of the next-observation NLL."""
    discover_steps: int = 500
    """Discovery: metacontroller training steps on D*."""
    discover_batch: int = 32
    """Discovery: episodes per batch."""
    alpha: float = 0.1
    """Discovery: KL weight α."""
    n_z: int = 8
    """Discovery: dimension of the abstract action z."""
    rank: int = 16
    """Discovery: rank of the controller U = B Aᵀ."""
    eval_episodes: int = 256
    """Held-out seeds every method is scored on."""
    rl_iterations: int = 30
    """GRPO: iterations (each collects rl_groups · rl_group_size episodes and takes one PPO update)."""
    rl_groups: int = 16
    """GRPO: distinct fresh seeds per iteration."""
    rl_group_size: int = 8
    """GRPO: episodes per seed (a group; advantages are normalised within it)."""
    rl_lr: float = 3e-4
    """GRPO: AdamW learning rate of the latent policy."""
    rl_epochs: int = 2
    """GRPO: passes over each batch."""
    rl_minibatches: int = 4
    """GRPO: episode minibatches per pass."""
    clip: float = 0.2
    """GRPO: PPO ratio clip ε."""
    delta: float = 1e-3
    """GRPO: δ of the advantage normalisation."""
    max_grad_norm: float = 1.0
    """GRPO: gradient-norm clip (0 = off)."""
    policy_width: int = 64
    """Width of the latent policy's Hawk layer (GRPO and ES)."""
    es_generations: int = 8
    """ES: generations."""
    es_population: int = 8
    """ES: population size (even; antithetic pairs)."""
    es_sigma: float = 0.05
    """ES: perturbation scale σ."""
    es_lr: float = 0.02
    """ES: Adam learning rate on the search gradient."""
    es_episodes: int = 48
    """ES: fresh seeds per generation on which every member is scored."""
    seed: int = 0
    """Seed of everything (demo, RL and ES episode seeds are offset by seed · 10⁷)."""
    threads: int = 1
    """torch intra-op threads (0 = torch default)."""
    progress: bool = True
    """Show progress bars."""

    def env_config(self) -> BabyAIEnvConfig:
        """The demonstrations' level."""
        return BabyAIEnvConfig(self.level, self.max_steps, self.n_slots)

    def rl_env_config(self) -> BabyAIEnvConfig:
        """The level of internal RL and evaluation."""
        return BabyAIEnvConfig(self.rl_level or self.level, self.max_steps, self.n_slots)


def babyai_preset(preset: str, out: str | None = None) -> BabyAIConfig:
    """`smoke` (seconds, for tests) or `quick` (a few minutes on one CPU thread)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown babyai preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = BabyAIConfig()
    if preset == "smoke":
        cfg = BabyAIConfig(num_demos=48, num_demos_star=32, heldout_fraction=0.25, max_steps=48, d_model=32, depth=2, n_heads=2,
                           head_dim=16, mlp_hidden=64, pretrain_steps=20, pretrain_batch=16, discover_steps=10,
                           discover_batch=16, eval_episodes=16, rl_iterations=2, rl_groups=4, rl_group_size=2,
                           rl_minibatches=2, policy_width=16, es_generations=1, es_population=4,
                           es_episodes=4, progress=False)
    if out is not None:
        cfg.out = out
    return cfg


# ------------------------------------------------------------------------------------------ helpers
class _EnvPool:
    """Reuse BatchedBabyAI instances by batch size (building minigrid envs costs more than resetting them)."""

    def __init__(self, config: BabyAIEnvConfig):
        self.config, self.envs = config, {}

    def get(self, n: int) -> BatchedBabyAI:
        if n not in self.envs:
            self.envs[n] = BatchedBabyAI(n, config=self.config)
        return self.envs[n]


def _chunks(seeds: np.ndarray, size: int = 256) -> list[np.ndarray]:
    return [seeds[i:i + size] for i in range(0, len(seeds), size)]


def eval_seeds(n: int) -> np.ndarray:
    return EVAL_SEED_BASE + np.arange(n)


@torch.no_grad()
def evaluate_bc(model: SequenceModel, pool: _EnvPool, seeds: np.ndarray, seed: int) -> dict[str, float]:
    """The base model acting alone (sampled actions) on the given episode seeds."""
    from internal_rl.rl.ppo import collect_raw

    succ, steps = [], []
    for i, chunk in enumerate(_chunks(seeds)):
        ro = collect_raw(model, pool.get(len(chunk)), chunk.tolist(), seed + 7 * i)
        succ.append(ro.success.numpy())
        steps.append(ro.env_steps.numpy())
    s = np.concatenate(succ)
    return {"success": float(s.mean()), "episodes": int(s.size), "mean_env_steps": float(np.concatenate(steps).mean())}


def _core(model, mc, layer: int, pool: _EnvPool, seeds: np.ndarray, seed: int):
    from internal_rl.rl.option_env import OptionCore

    env = pool.get(len(seeds))
    return OptionCore(model, mc, layer, len(seeds), task=seeds.tolist(), seed=seed, env=env)


@torch.no_grad()
def evaluate_latent(model, mc, layer: int, policy, pool: _EnvPool, seeds: np.ndarray, seed: int) -> dict[str, float]:
    """Internal RL's policy over z acting through the option-level core on the given episode seeds."""
    from internal_rl.rl.ppo import collect_latent

    succ, steps, decisions = [], [], []
    for i, chunk in enumerate(_chunks(seeds)):
        ro = collect_latent(_core(model, mc, layer, pool, chunk, seed + 7 * i), policy, seed + 7 * i)
        succ.append(ro.success.numpy())
        steps.append(ro.env_steps.numpy())
        decisions.append(ro.mask.sum(1).numpy())
    s = np.concatenate(succ)
    return {"success": float(s.mean()), "episodes": int(s.size),
            "mean_env_steps": float(np.concatenate(steps).mean()),
            "decisions_per_episode": float(np.concatenate(decisions).mean())}


def _sizes(tr) -> dict[str, Any]:
    sub = np.asarray(tr.subgoals_flat)
    ends = np.asarray(tr.step_offsets[1:]) - 1
    clauses = sub[ends[tr.lengths > 0]] + 1 if len(tr) else np.zeros(0)
    return {"episodes": len(tr), "steps": int(tr.num_steps), "mean_length": float(tr.lengths.mean()),
            "max_length": int(tr.lengths.max()), "mean_clauses_reached": float(clauses.mean())}


# ------------------------------------------------------------------------------------------ phases
def _data(cfg: BabyAIConfig, folder: Path) -> dict:
    from internal_rl.data.babyai_dataset import generate_babyai

    if not (1 <= cfg.num_demos <= 2_000_000 and 1 <= cfg.num_demos_star <= 2_000_000):
        raise ValueError(f"num_demos and num_demos_star must lie in 1..2,000,000 (seed ranges), got "
                         f"{cfg.num_demos}, {cfg.num_demos_star}")
    base = cfg.seed * 10_000_000
    stats: dict[str, Any] = {}
    sets = {
        "D": generate_babyai(cfg.num_demos, cfg.env_config(), seed_start=base, eps=cfg.eps, noise_seed=cfg.seed,
                             batch_size=cfg.demo_batch, progress=cfg.progress),
        "D_star": generate_babyai(cfg.num_demos_star, cfg.env_config(), seed_start=base + 2_000_000,
                                  batch_size=cfg.demo_batch, progress=cfg.progress),
    }
    for nm, t in sets.items():
        train, held = t.split(cfg.heldout_fraction, seed=cfg.seed)
        train.save(folder / nm)
        held.save(folder / f"{nm}_heldout")
        stats[nm] = {"eps": t.meta["eps"], "bot_success_rate": t.meta["success_rate"],
                     "bot_episodes_per_s": t.meta["episodes_per_s"],
                     "dropped": t.meta["dropped_bot_failed"] + t.meta["dropped_not_completed"],
                     "train": _sizes(train), "heldout": _sizes(held)}
    write_json(folder / "data_stats.json", stats)
    return stats


def _pretrain(cfg: BabyAIConfig, root: Path) -> dict:
    from internal_rl.phases.pretrain import PretrainConfig, run_pretrain

    env_cfg = cfg.env_config()
    model = SequenceModelConfig(obs_dim=env_cfg.obs_dim, n_actions=NUM_ACTIONS, d_model=cfg.d_model, depth=cfg.depth,
                                n_heads=cfg.n_heads, head_dim=cfg.head_dim, mlp_hidden=cfg.mlp_hidden,
                                max_len=max(cfg.max_steps + 1, 8), encoder="linear",
                                prev_action_input=cfg.prev_action_input)
    steps = cfg.pretrain_steps
    pc = PretrainConfig(data=str(root / "data"), out=str(root / "pretrain"), model=model, steps=steps,
                        batch_size=cfg.pretrain_batch, lr=cfg.pretrain_lr, lr_schedule="cosine",
                        warmup_steps=min(100, steps // 10), obs_weight=cfg.obs_weight, eval_every=steps,
                        eval_episodes=256, rollout_episodes=0, log_every=max(1, min(50, steps)), ckpt_every=steps,
                        seed=cfg.seed, threads=cfg.threads, progress=cfg.progress)
    return run_pretrain(pc)


def _discover(cfg: BabyAIConfig, root: Path) -> dict:
    from internal_rl.phases.discover import DiscoverConfig, run_discover

    dc = DiscoverConfig(model=str(root / "pretrain"), data=str(root / "data"), out=str(root / "discover"),
                        alpha=cfg.alpha, n_z=cfg.n_z, rank=cfg.rank, steps=cfg.discover_steps,
                        batch_size=cfg.discover_batch, log_every=max(1, min(50, cfg.discover_steps)),
                        ckpt_every=cfg.discover_steps, eval_episodes=256, seed=cfg.seed, threads=cfg.threads,
                        progress=cfg.progress)
    return run_discover(dc)


def segmentation_by_tolerance(model: SequenceModel, mc, layer: int, data_dir: Path, alpha: float,
                              episodes: int = 256) -> dict[str, dict]:
    """Switches (β > 0.5, deterministic z̃ = μ) vs the bot's clause boundaries on held-out D*, at ±0, ±1, ±2 steps."""
    from internal_rl.data.trajectories import Trajectories
    from internal_rl.phases.discover import evaluate_segmentation

    held = Trajectories.load(data_dir / "D_star_heldout")
    _, arrays = evaluate_segmentation(model, mc, held, layer, episodes, alpha)
    return {f"tol{t}": segmentation_metrics(arrays["beta"], arrays["subgoals"], arrays["mask"], tol=t)
            for t in (0, 1, 2)}


def _grpo(cfg: BabyAIConfig, model, mc, layer: int, pool: _EnvPool, folder: Path, eval_s: np.ndarray) -> dict:
    from internal_rl.rl.policy import LatentPolicy
    from internal_rl.rl.ppo import collect_latent, latent_logp, ppo_update

    torch.manual_seed(cfg.seed)
    net = LatentPolicy(model.config.d_model, mc.config.n_z, cfg.policy_width)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.rl_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    logger = MetricsLogger(folder)
    G, K = cfg.rl_groups, cfg.rl_group_size
    base = cfg.seed * 10_000_000 + 4_000_000
    initial = evaluate_latent(model, mc, layer, net, pool, eval_s, seed=555)

    def logp(ro, idx):
        net.train()
        return latent_logp(net, ro, idx)

    curve, episodes, env_steps, t0 = [], 0, 0, time.time()
    bar = tqdm(range(cfg.rl_iterations), desc="babyai grpo", disable=not cfg.progress, dynamic_ncols=True)
    for it in bar:
        seeds = np.repeat(base + it * G + np.arange(G), K)
        ro = collect_latent(_core(model, mc, layer, pool, seeds, seed=cfg.seed * 1_000_003 + it), net,
                            cfg.seed * 1_000_003 + it)
        sr = float(ro.success.float().mean())
        solved_groups = ro.success.float().view(G, K).mean(1)
        mixed = float(((solved_groups > 0) & (solved_groups < 1)).float().mean())
        stats = ppo_update(logp, params, opt, ro, cfg.rl_epochs, cfg.rl_minibatches, cfg.clip, cfg.delta,
                           cfg.max_grad_norm, g, group_size=K)
        episodes += len(seeds)
        env_steps += int(ro.env_steps.sum())
        decisions = float(ro.mask.sum(1).float().mean())
        curve.append({"iteration": it + 1, "episodes": episodes, "env_steps": env_steps, "success": sr,
                      "groups_with_signal": mixed})
        logger.log(it + 1, success=sr, groups_with_signal=mixed, episodes=episodes, env_steps=env_steps,
                   decisions_per_episode=decisions, loss=stats["loss"], approx_kl=stats.get("approx_kl", 0.0),
                   clip_fraction=stats.get("clip_fraction", 0.0), seconds=time.time() - t0)
        bar.set_postfix(success=f"{sr:.3f}", decisions=f"{decisions:.1f}")
    bar.close()
    logger.close()
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, folder / "policy.safetensors")
    final = evaluate_latent(model, mc, layer, net, pool, eval_s, seed=555)
    res = {"heldout": final, "heldout_at_init": initial, "episodes": episodes, "env_steps": env_steps,
           "curve": curve, "seconds": time.time() - t0}
    write_json(folder / "results.json", res)
    return res


def _es(cfg: BabyAIConfig, model, mc, layer: int, pool: _EnvPool, folder: Path, eval_s: np.ndarray) -> dict:
    from internal_rl.rl.es import evolve
    from internal_rl.rl.policy import LatentPolicy
    from internal_rl.rl.ppo import collect_latent

    torch.manual_seed(cfg.seed)
    net = LatentPolicy(model.config.d_model, mc.config.n_z, cfg.policy_width)
    params = list(net.parameters())
    base = cfg.seed * 10_000_000 + 6_000_000
    state = {"gen": 0}
    logger = MetricsLogger(folder)
    t0 = time.time()
    episodes = [0]

    def fitness(vector: torch.Tensor) -> float:
        torch.nn.utils.vector_to_parameters(vector, params)
        gen = state["gen"]
        seeds = base + gen * cfg.es_episodes + np.arange(cfg.es_episodes)
        s = cfg.seed * 1_000_003 + gen  # common random numbers within a generation
        ro = collect_latent(_core(model, mc, layer, pool, seeds, seed=s), net, s)
        episodes[0] += len(seeds)
        return float(ro.success.float().mean())

    bar = tqdm(total=cfg.es_generations, desc="babyai es", disable=not cfg.progress, dynamic_ncols=True)

    def callback(gen: int, stats: dict) -> None:
        state["gen"] = gen + 1
        logger.log(gen + 1, episodes=episodes[0], seconds=time.time() - t0, **stats)
        bar.update(1)
        bar.set_postfix(fitness=f"{stats['fitness_mean']:.3f}")

    history = evolve(params, fitness, cfg.es_generations, population_size=cfg.es_population, sigma=cfg.es_sigma,
                     lr=cfg.es_lr, seed=cfg.seed, callback=callback)
    bar.close()
    logger.close()
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, folder / "policy.safetensors")
    final = evaluate_latent(model, mc, layer, net, pool, eval_s, seed=555)
    res = {"heldout": final, "episodes": episodes[0], "history": history, "seconds": time.time() - t0}
    write_json(folder / "results.json", res)
    return res


def run_babyai(cfg: BabyAIConfig) -> dict:
    """Run the whole BabyAI pipeline; writes and returns ``<out>/babyai_results.json``."""
    from internal_rl.envs.babyai import require_minigrid
    from internal_rl.phases.discover import load_metacontroller

    require_minigrid()
    set_threads(cfg.threads)
    set_seed(cfg.seed)
    root = Path(cfg.out)
    (root / "data").mkdir(parents=True, exist_ok=True)
    write_json(root / "config.json", {"babyai": cfg})
    seconds: dict[str, float] = {}
    t = time.time()
    data = _data(cfg, root / "data")
    seconds["data"] = time.time() - t
    print(f"[babyai] {cfg.level}: bot success {data['D']['bot_success_rate']:.3f}, "
          f"{data['D']['train']['episodes']} train episodes, mean length {data['D']['train']['mean_length']:.1f}")
    t = time.time()
    pre = _pretrain(cfg, root)
    seconds["pretrain"] = time.time() - t
    print(f"[babyai] pretrain: held-out action NLL {pre['heldout_action_nll']:.3f}")
    t = time.time()
    seg = _discover(cfg, root)
    seconds["discover"] = time.time() - t

    model = freeze(SequenceModel.from_pretrained(root / "pretrain"))
    mc, layer = load_metacontroller(root / "discover")
    for p in mc.parameters():
        p.requires_grad_(False)
    seg_tol = segmentation_by_tolerance(model, mc, layer, root / "data", cfg.alpha)
    pool = _EnvPool(cfg.rl_env_config())
    eval_s = eval_seeds(cfg.eval_episodes)
    t = time.time()
    bc = evaluate_bc(model, pool, eval_s, seed=555)
    seconds["bc_eval"] = time.time() - t
    print(f"[babyai] BC model alone: held-out success {bc['success']:.3f} on {bc['episodes']} seeds")
    t = time.time()
    grpo = _grpo(cfg, model, mc, layer, pool, root / "rl_grpo", eval_s)
    seconds["internal_rl_grpo"] = time.time() - t
    print(f"[babyai] internal RL (GRPO): held-out success {grpo['heldout']['success']:.3f} "
          f"(policy at init {grpo['heldout_at_init']['success']:.3f})")
    t = time.time()
    es = _es(cfg, model, mc, layer, pool, root / "rl_es", eval_s)
    seconds["internal_rl_es"] = time.time() - t
    print(f"[babyai] internal RL (ES): held-out success {es['heldout']['success']:.3f}")

    results = {
        "level": cfg.level,
        "rl_level": cfg.rl_level or cfg.level,
        "mission_in_observation": cfg.n_slots > 0,
        "eval_seeds": f"{EVAL_SEED_BASE} + 0..{cfg.eval_episodes - 1} (held out from demos and training)",
        "success": {
            "bot": data["D"]["bot_success_rate"],
            "bc_model": bc["success"],
            "internal_rl_at_init": grpo["heldout_at_init"]["success"],
            "internal_rl_grpo": grpo["heldout"]["success"],
            "internal_rl_es": es["heldout"]["success"],
        },
        "bc": bc,
        "internal_rl_grpo": {k: grpo[k] for k in ("heldout", "heldout_at_init", "episodes", "env_steps", "curve")},
        "internal_rl_es": {k: es[k] for k in ("heldout", "episodes", "history")},
        "segmentation": {
            "what": "metacontroller switches (beta > 0.5, t >= 1) vs the bot's clause completions (changes of the "
                    "clause index) on held-out bot demos D*_heldout; tolN = a match within +-N steps",
            "discover": seg,
            **seg_tol,
        },
        "pretrain": pre,
        "data": data,
        "seconds": seconds,
        "config": dataclasses.asdict(cfg),
    }
    write_json(root / "babyai_results.json", results)
    print(f"[babyai] segmentation (tol 1): F1 {seg_tol['tol1']['f1']:.3f}, switches/episode "
          f"{seg_tol['tol1']['switches_per_episode']:.2f} vs clauses/episode {seg_tol['tol1']['subgoals_per_episode']:.2f}")
    print(f"[babyai] results -> {root / 'babyai_results.json'}")
    return to_jsonable(results)
