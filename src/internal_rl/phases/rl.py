"""RL on the sparse-reward post-training task, by one of the paper's methods (Fig. 8):

- internal:  PPO over z through the option-level env (frozen base, decoder and switching unit);
- beta1:     the same with a metacontroller trained and used with β ≡ 1 (a decision every step);
- cotrained: the same with a base model and metacontroller co-trained from scratch;
- raw:       the same PPO fine-tuning the pretrained model on primitive actions.

The method is chosen by what the `discover` folder holds (beta1 and cotrained are discover runs with
always_switch / cotrain); `raw` needs no discover folder. Writes policy weights, metrics.csv and
results.json (success curve against episodes and primitive env steps, final success on fresh episodes).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from internal_rl.envs.pinpad import POST_TRAINING_TASK, BatchedPinPad, ending_histograms, parse_task
from internal_rl.models.sequence_model import SequenceModel
from internal_rl.phases.common import (
    RESUME_FREE,
    MetricsLogger,
    check_resume,
    config_from_saved,
    load_train_state,
    report_budget_reached,
    resolve_device,
    save_train_state,
    set_seed,
    set_threads,
    write_json,
)
from internal_rl.phases.discover import load_base, load_metacontroller
from internal_rl.rl.critic import LatentCritic
from internal_rl.rl.objective import (
    decision_advantages,
    group_scaled_decision_advantages,
    normalise_decision_advantages,
    tied_group_share,
)
from internal_rl.rl.option_env import OptionCore
from internal_rl.rl.policy import LatentPolicy
from internal_rl.rl.ppo import (
    collect_latent,
    collect_raw,
    critic_update,
    latent_logp,
    latent_values,
    ppo_update,
    raw_logp,
)
from internal_rl.rl.rollout import check_temperature

METHODS = ("internal", "raw", "beta1", "cotrained")


@dataclass
class RLConfig:
    """RL phase (paper Table A13: batch 1024, AdamW lr 3e-5, weight decay 0; lr scanned per method)."""

    method: str = "internal"
    """internal | raw | beta1 | cotrained (beta1/cotrained read the matching discover folder)."""
    model: str = "runs/demo/pretrain"
    discover: str = "runs/demo/discover"
    """Discover run folder with the metacontroller (unused by raw)."""
    out: str = "runs/demo/rl"
    task: str = POST_TRAINING_TASK
    oracle_switch: bool = False
    """Upper-bound analysis, not the paper's method: the policy decides exactly when the env's
    ground-truth subgoal changes instead of when the switching unit fires (internal/beta1 only)."""
    beta_threshold: float = 0.0
    """A new decision when the switching unit's β ≥ this (0: the metacontroller's own, 0.5 unless set at
    discovery: the paper's). Soft β can bump to about 0.5 inside a subgoal; `internal-rl discover` writes the
    switch F1 per threshold, so read the cut there (internal and cotrained, without oracle_switch)."""
    action_temperature: float = 1.0
    """Primitive actions inside the option env are drawn from softmax(logits / τ) of the controlled base:
    1 is the paper's sampling; 0 takes the argmax. An analysis knob for how much of the failure rate is the
    frozen base's sampling noise, not the paper's method (z-space methods only)."""
    also_temperatures: list[float] = field(default_factory=list)
    """Also score the final policy at these primitive-action temperatures (same fresh episodes), written as
    final_success_at_temperature (z-space methods only)."""
    episodes: int = 8192
    """Training budget in episodes."""
    batch_size: int = 256
    """Episodes per PPO iteration."""
    lr: float = 3e-4
    weight_decay: float = 0.0
    clip: float = 0.2
    epochs: int = 2
    minibatches: int = 4
    delta: float = 1e-3
    """δ of the advantage normalisation."""
    group_size: int = 1
    """GRPO variant: training episodes come in groups of this many on one layout, and each episode's
    advantage is normalised within its group. 1 is the paper's batch normalisation (no groups)."""
    max_grad_norm: float = 1.0
    entropy_coef: float = 0.0
    """Entropy bonus c_H: the loss subtracts c_H × the policy's mean entropy per decision (the Gaussian over z;
    raw: the categorical over primitive actions). 0, the default, is the paper's (no bonus). Like the rest of the
    update it is skipped in batches whose returns all tie (e.g. no success yet)."""
    policy_width: int = 256
    min_std: float = 0.0
    """A floor on the z-policy's σ per dimension (0, the default: none, the paper's). Exploration that never
    narrows: a GRPO group whose 16 draws of z all fail gives no signal, and a floor keeps its draws apart.
    Acting with the mean, `final_success_mean_z`, then scores the policy without the floor's noise."""
    critic: bool = False
    """Per-decision credit (an option; the paper's PPO is critic-free): a critic V over the residual streams at
    switch times (an SSM like the policy's, trained on the returns alongside it) gives each decision its own
    advantage by GAE(γ = 1, `gae_lambda`) instead of the episode's shared one (z-space methods only). With
    `group_size` > 1 groups still share layouts, and a batch whose groups all tie is still skipped. `--resume`
    with `critic` on a run trained without one adds a fresh critic (V ≡ 0) from there on."""
    gae_lambda: float = 0.5
    """λ of the critic's advantages: 1 judges each decision by R − V at its own state, 0 by V_{k+1} − V_k (its
    own effect on the value); between mixes the two."""
    critic_scale: str = "batch"
    """How the critic's advantages are scaled: 'batch' normalises them over the batch's valid decisions; 'group'
    (needs group_size > 1) divides each by its GRPO group's return std and zeroes the groups whose returns all
    tie, as GRPO does: before the first successes a young critic's noise then moves nothing."""
    critic_warmup: int = 0
    """The critic's first this many iterations train only the critic (the policy waits, the episodes count):
    a new critic's V ≡ 0 otherwise gives the first updates the bare GAE of the returns."""
    eval_episodes: int = 256
    """Fresh post-training episodes for the final success rate."""
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'."""
    resume: bool = False
    progress: bool = True

    def check(self) -> None:
        """Refuse settings that contradict each other or the method, before any model is loaded."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        parse_task(self.task)  # a malformed task string fails here, before any model is loaded
        if self.episodes < 1 or self.batch_size < 1 or self.eval_episodes < 1:
            raise ValueError(f"episodes, batch_size and eval_episodes must be >= 1, got {self.episodes}, "
                             f"{self.batch_size}, {self.eval_episodes}")
        if self.epochs < 1 or self.minibatches < 1:
            raise ValueError(f"epochs and minibatches must be >= 1, got {self.epochs}, {self.minibatches}")
        if self.oracle_switch and self.method == "raw":
            raise ValueError("oracle_switch applies to z-space methods; raw acts at every step")
        if self.beta_threshold and not 0.0 < self.beta_threshold < 1.0:
            raise ValueError(f"beta_threshold must be in (0, 1) (0: the metacontroller's own), got {self.beta_threshold}")
        if self.beta_threshold and self.method in ("raw", "beta1"):
            raise ValueError(f"beta_threshold has no effect with method {self.method}: it decides at every step")
        if self.beta_threshold and self.oracle_switch:
            raise ValueError("beta_threshold has no effect with oracle_switch, which decides at the true subgoal changes")
        if self.action_temperature != 1 and self.method == "raw":
            raise ValueError("action_temperature applies to z-space methods: raw trains the primitive policy "
                             "itself, whose log-probabilities PPO needs at τ = 1")
        if self.also_temperatures and self.method == "raw":
            raise ValueError("also_temperatures applies to z-space methods (raw's policy is its primitive one)")
        for t in [self.action_temperature, *self.also_temperatures]:
            check_temperature(t)
        if self.entropy_coef < 0:
            raise ValueError(f"entropy_coef must be >= 0 (0: no entropy bonus, the paper's), got {self.entropy_coef}")
        if self.min_std and self.method == "raw":
            raise ValueError("min_std applies to z-space methods (raw acts with the base's categorical policy)")
        if not 0.0 <= self.min_std <= 1.0:
            raise ValueError(f"min_std must be in [0, 1] (σ of the prior is 1; 0: no floor), got {self.min_std}")
        if self.critic and self.method == "raw":
            raise ValueError("critic applies to z-space methods (raw's decisions are primitive actions)")
        if self.critic_warmup < 0 or (self.critic_warmup and not self.critic):
            raise ValueError(f"critic_warmup must be >= 0 and needs critic, got {self.critic_warmup}")
        if self.critic_scale not in ("batch", "group"):
            raise ValueError(f"critic_scale must be 'batch' or 'group', got {self.critic_scale!r}")
        if self.critic_scale == "group" and (not self.critic or self.group_size < 2):
            raise ValueError("critic_scale 'group' needs critic and group_size > 1 (GRPO groups)")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if self.group_size < 1 or self.batch_size % self.group_size:
            raise ValueError(f"group_size must divide batch_size {self.batch_size}, got {self.group_size}")


class _Agent:
    """What a method trains and how it collects and scores episodes."""

    def __init__(self, cfg: RLConfig, device: torch.device = torch.device("cpu")):
        self.cfg = cfg
        cfg.check()
        if cfg.method == "raw":
            self.model = SequenceModel.from_pretrained(cfg.model)
            self.net = self.model
        else:
            self.model = load_base(cfg.discover, cfg.model)
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.mc, self.layer = load_metacontroller(cfg.discover)
            for p in self.mc.parameters():
                p.requires_grad_(False)
            self.net = LatentPolicy(self.model.config.d_model, self.mc.config.n_z, cfg.policy_width,
                                    min_std=cfg.min_std)
            self.mc.to(device)
        self.critic = LatentCritic(self.model.config.d_model, cfg.policy_width).to(device) if cfg.critic else None
        self.model.to(device)
        self.net.to(device)

    def collect(self, n: int, seed: int, temperature: float | None = None, group_size: int = 1,
                mean_z: bool = False):
        """`n` episodes (in layout groups of `group_size`); z-space methods act at `temperature` (None: the
        run's action_temperature), with the policy's mean z when `mean_z`."""
        if self.cfg.method == "raw":
            return collect_raw(self.model, BatchedPinPad(n, seed=seed), self.cfg.task, seed, group_size)
        tau = self.cfg.action_temperature if temperature is None else temperature
        core = OptionCore(self.model, self.mc, self.layer, n, self.cfg.task, seed=seed,
                          oracle_switch=self.cfg.oracle_switch, action_temperature=tau, group_size=group_size,
                          beta_threshold=self.cfg.beta_threshold or None)
        return collect_latent(core, self.net, seed, mean_z)

    def logp(self, ro, idx, with_entropy: bool = False):
        self.net.train()
        if self.cfg.method == "raw":
            return raw_logp(self.model, ro, idx, with_entropy)
        return latent_logp(self.net, ro, idx, with_entropy)


def load_finished_agent(run: str | Path) -> tuple[_Agent, RLConfig]:
    """The agent of a finished z-space ``internal-rl rl`` folder on the CPU, its policy (and critic, if the run
    trained one) loaded, with the run's config: what the analyses on top of a trained run start from."""
    run = Path(run)
    for name in ("config.json", "policy.safetensors"):
        if not (run / name).exists():
            raise FileNotFoundError(f"{run / name} not found: give a finished `internal-rl rl` run folder")
    cfg = config_from_saved(RLConfig(), {**json.loads((run / "config.json").read_text())["rl"], "progress": False,
                                         "device": "cpu", "resume": False})
    if cfg.method == "raw":
        raise ValueError(f"{run}: a raw-action run has no policy over z; give a z-space run")
    agent = _Agent(cfg)
    agent.net.load_state_dict(load_file(run / "policy.safetensors"))
    if agent.critic is not None:
        agent.critic.load_state_dict(load_file(run / "critic.safetensors"))
    return agent, cfg


def evaluate_agent(agent: _Agent, episodes: int, seed: int, temperature: float | None = None,
                   mean_z: bool = False) -> dict:
    """Success rate on fresh episodes of the task (stochastic policy, as trained; z = the policy's mean with
    `mean_z`), and where episodes end; z-space methods act at primitive-action `temperature` (None: the run's)."""
    ros = [agent.collect(min(256, episodes - s), seed + 7 * i, temperature, mean_z=mean_z)
           for i, s in enumerate(range(0, episodes, 256))]
    s = np.concatenate([ro.success.numpy() for ro in ros])
    return {"success": float(s.mean()), "episodes": int(s.size),
            "mean_env_steps": float(np.concatenate([ro.env_steps.numpy() for ro in ros]).mean()),
            **ending_histograms(np.concatenate([ro.progress.numpy() for ro in ros]),
                                np.concatenate([ro.wrong_colour.numpy() for ro in ros]))}


def run_rl(cfg: RLConfig) -> dict:
    """Train one method with PPO for `episodes` episodes; write results.json with the success curve."""
    set_threads(cfg.threads)
    set_seed(cfg.seed)
    out = Path(cfg.out)
    if cfg.resume:
        check_resume(out, "rl", cfg, RESUME_FREE | {"model", "discover", "episodes", "also_temperatures", "critic",
                                                   "critic_warmup", "gae_lambda", "critic_scale"})
    agent = _Agent(cfg, resolve_device(cfg.device))  # checks the config before anything is written
    out.mkdir(parents=True, exist_ok=True)
    params = [p for p in agent.net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    critic = agent.critic
    critic_opt = None if critic is None else torch.optim.AdamW(critic.parameters(), lr=cfg.lr,
                                                               weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    it, episodes, env_steps, curve = 0, 0, 0, []
    critic_age = 0  # iterations the critic has trained for (it counts its warm-up)
    if cfg.resume:
        agent.net.load_state_dict(load_file(out / "policy.safetensors"))
        st = load_train_state(out, opt)
        it, episodes, env_steps, curve = st["step"], *st["extra"]["counters"]
        g.set_state(st["extra"]["generator"])
        if critic is not None and "critic_optimizer" in st["extra"]:
            critic.load_state_dict(load_file(out / "critic.safetensors"))
            critic_opt.load_state_dict(st["extra"]["critic_optimizer"])
            critic_age = st["extra"].get("critic_iterations", it)  # runs saved before the warm-up existed
        elif critic is not None:
            print(f"[rl] {out} was trained without a critic to iteration {it}: a new critic (V ≡ 0) joins it here")
        elif "critic_optimizer" in st["extra"]:
            raise ValueError(f"{out} was trained with a critic: resume it with --critic")
    write_json(out / "config.json", {"rl": cfg})
    logger = MetricsLogger(out, resume_step=it if cfg.resume else None)
    iterations = max(1, cfg.episodes // cfg.batch_size)
    if cfg.resume and it >= iterations:
        report_budget_reached("rl", out, f"{episodes} episodes", "--episodes", cfg.episodes)
    bar = tqdm(total=iterations, initial=it, desc=f"rl[{cfg.method}]", disable=not cfg.progress, dynamic_ncols=True)
    t0 = time.time()

    def checkpoint():
        save_file({k: v.detach().cpu().contiguous() for k, v in agent.net.state_dict().items()},
                  out / "policy.safetensors")
        extra = {"counters": (episodes, env_steps, curve), "generator": g.get_state()}
        if critic is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in critic.state_dict().items()},
                      out / "critic.safetensors")
            extra["critic_optimizer"] = critic_opt.state_dict()
            extra["critic_iterations"] = critic_age
        save_train_state(out, it, opt, extra=extra)

    while it < iterations:
        ro = agent.collect(cfg.batch_size, seed=cfg.seed * 1_000_003 + it * 101, group_size=cfg.group_size)
        if critic is not None and critic_age < cfg.critic_warmup:  # the critic learns first; the policy waits
            stats = {"loss": 0.0, "skipped": 1.0}
        else:
            adv = None
            if critic is not None:  # per-decision advantages from the critic as it was when the batch was collected
                critic.eval()
                with torch.no_grad():
                    values = latent_values(critic, ro, torch.arange(cfg.batch_size, device=ro.mask.device))
                adv = decision_advantages(values, ro.returns.to(values.dtype), ro.mask, cfg.gae_lambda)
                adv = (group_scaled_decision_advantages(adv, ro.returns, cfg.group_size, cfg.delta)
                       if cfg.critic_scale == "group" else normalise_decision_advantages(adv, ro.mask, cfg.delta))
            stats = ppo_update(agent.logp, params, opt, ro, cfg.epochs, cfg.minibatches, cfg.clip, cfg.delta,
                               cfg.max_grad_norm, g, cfg.group_size, cfg.entropy_coef, advantages=adv)
        if critic is not None:
            stats["value_loss"] = critic_update(critic, critic_opt, ro, cfg.epochs, cfg.minibatches,
                                                cfg.max_grad_norm, g)
            critic_age += 1
        it += 1
        episodes += cfg.batch_size
        env_steps += int(ro.env_steps.sum())
        sr = float(ro.success.float().mean())
        decisions = float(ro.mask.sum(1).float().mean())
        curve.append({"episodes": episodes, "env_steps": env_steps, "success": sr})
        extra = {k: stats[k] for k in ("entropy", "value_loss") if k in stats}
        if ro.policy_std is not None:  # z-space methods: how much the policy still explores
            extra["policy_std"] = float(ro.policy_std[ro.mask].mean())
        if cfg.group_size > 1:  # GRPO: the groups that carry no signal (all succeed or all fail)
            extra["tied_groups"] = tied_group_share(ro.returns, cfg.group_size)
        logger.log(it, success=sr, episodes=episodes, env_steps=env_steps, decisions_per_episode=decisions,
                   loss=stats["loss"], approx_kl=stats.get("approx_kl", 0.0),
                   clip_fraction=stats.get("clip_fraction", 0.0), seconds=time.time() - t0, **extra)
        bar.update(1)
        bar.set_postfix(success=f"{sr:.3f}", decisions=f"{decisions:.1f}")
        if it % 10 == 0 or it == iterations:
            checkpoint()
    bar.close()
    checkpoint()
    final = evaluate_agent(agent, cfg.eval_episodes, seed=10_000_000 + cfg.seed)
    res = {"method": cfg.method, "oracle_switch": cfg.oracle_switch, "action_temperature": cfg.action_temperature,
           "beta_threshold": None if cfg.method in ("raw", "beta1") or cfg.oracle_switch
           else cfg.beta_threshold or agent.mc.config.beta_threshold,
           "group_size": cfg.group_size, "critic": cfg.critic,
           "gae_lambda": cfg.gae_lambda if cfg.critic else None,
           "critic_scale": cfg.critic_scale if cfg.critic else None,
           "final_success": final["success"],
           "eval_episodes": final["episodes"], "eval_progress_hist": final["progress_hist"],
           "eval_wrong_colour_hist": final["wrong_colour_hist"],
           "eval_wrong_colour_progress_hist": final["wrong_colour_progress_hist"],
           "episodes": episodes, "env_steps": env_steps, "curve": curve, "seconds": time.time() - t0}
    if cfg.method != "raw":  # the same fresh episodes, acting with the policy's mean z (no exploration noise)
        res["final_success_mean_z"] = evaluate_agent(agent, cfg.eval_episodes, seed=10_000_000 + cfg.seed,
                                                     mean_z=True)["success"]
    for t in cfg.also_temperatures:
        ev = evaluate_agent(agent, cfg.eval_episodes, seed=10_000_000 + cfg.seed, temperature=t)
        res.setdefault("final_success_at_temperature", {})[str(t)] = ev["success"]
        res.setdefault("eval_progress_hist_at_temperature", {})[str(t)] = ev["progress_hist"]
    write_json(out / "results.json", res)
    logger.close()
    print(f"[rl:{cfg.method}] final success {final['success']:.3f} on {final['episodes']} fresh episodes "
          f"after {episodes} episodes / {env_steps} env steps"
          + (f"; mean z: {res['final_success_mean_z']:.3f}" if "final_success_mean_z" in res else "")
          + "".join(f"; at τ={t}: {v:.3f}" for t, v in res.get("final_success_at_temperature", {}).items()))
    return res
