"""Data phase: generate the gridworld-pinpad expert datasets D and D* and their statistics.

Writes ``OUT/D``, ``OUT/D_heldout``, ``OUT/D_star``, ``OUT/D_star_heldout`` (``Trajectories``
folders) and ``OUT/data_stats.json`` (expert success, sizes, speed, lengths, expert entropy).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from internal_rl.data.pinpad_dataset import generate_pinpad
from internal_rl.data.trajectories import Trajectories
from internal_rl.envs.pinpad import POST_TRAINING_TASK, PRETRAINING_TASKS, BatchedPinPad, PinPadConfig
from internal_rl.experts.pinpad_expert import ShortestPathExpert, policy_entropy


@dataclass
class DataConfig:
    """Configuration of the data phase (gridworld-pinpad expert demonstrations)."""

    out: str = "runs/data"
    """Output folder; receives D/, D_heldout/, D_star/, D_star_heldout/ and data_stats.json."""
    num_episodes: int = 100_000
    """Episodes in dataset D (pretraining data, ε-noisy expert), before the heldout split."""
    num_episodes_star: int = 20_000
    """Episodes in dataset D* (ε=0 expert, for controllers and the metacontroller), before the split."""
    eps: float = 0.0
    """ε of the expert for D: probability of a random non-terminating action (paper default 0)."""
    seed: int = 0
    """Seed for layouts, tasks, expert sampling and the splits."""
    heldout_fraction: float = 0.05
    """Fraction of each dataset kept apart as a heldout set (D_heldout, D_star_heldout)."""
    stats_episodes: int = 2000
    """Episodes per task set (pretraining, post-training) for the expert statistics (>= 1000)."""
    batch_size: int = 4096
    """Episodes rolled out at once by the batched env."""
    progress: bool = True
    """Show progress bars."""


def expert_stats(tasks: str | list[str] | None, num_episodes: int, seed: int, config: PinPadConfig | None = None,
                 batch_size: int = 4096) -> dict[str, float]:
    """Roll out the ε=0 expert: success rate, episode lengths and action entropy (nats/step)."""
    cfg = config if config is not None else PinPadConfig()
    expert = ShortestPathExpert(0.0)
    rng = np.random.default_rng(seed)
    successes, lengths, ent_sum, n_steps, done_eps = [], [], 0.0, 0, 0
    start = time.perf_counter()
    while done_eps < num_episodes:
        n = min(batch_size, num_episodes - done_eps)
        env = BatchedPinPad(n, cfg, copy_obs=False)
        env.rng = rng
        env.reset(tasks if tasks is None or isinstance(tasks, str) else [tasks[i] for i in rng.integers(len(tasks), size=n)])
        while not env.done.all():
            live = ~env.done
            probs = expert.action_probs(env)
            ent_sum += float(policy_entropy(probs[live]).sum())
            n_steps += int(live.sum())
            env.step(expert.act(env, rng))
        successes.append(env.success.copy())
        lengths.append(env.step_count.copy())
        done_eps += n
    elapsed = time.perf_counter() - start
    success, length = np.concatenate(successes), np.concatenate(lengths)
    return {
        "episodes": int(num_episodes),
        "success_rate": float(success.mean()),
        "mean_length": float(length.mean()),
        "max_length": int(length.max()),
        "entropy_nats_per_step": ent_sum / max(n_steps, 1),
        "episodes_per_s": num_episodes / elapsed,
    }


def _sizes(tr: Trajectories) -> dict[str, Any]:
    lengths = tr.lengths
    return {"episodes": len(tr), "steps": tr.num_steps, "mean_length": float(lengths.mean()),
            "max_length": int(lengths.max())}


def run_data(cfg: DataConfig) -> dict[str, Any]:
    """Generate D and D*, split off heldout sets, save everything under ``cfg.out``; returns the stats."""
    if cfg.stats_episodes < 1000:
        raise ValueError(f"stats_episodes must be >= 1000 for meaningful expert statistics, got {cfg.stats_episodes}")
    if not 0.0 <= cfg.heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie in [0, 1), got {cfg.heldout_fraction}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(cfg.seed).generate_state(6)
    stats: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v
                                        for k, v in dataclasses.asdict(cfg).items()}}
    speeds = {}
    for name, n, eps, seed in (("D", cfg.num_episodes, cfg.eps, int(seeds[0])),
                               ("D_star", cfg.num_episodes_star, 0.0, int(seeds[1]))):
        start = time.perf_counter()
        tr = generate_pinpad(n, eps=eps, seed=seed, batch_size=cfg.batch_size, progress=cfg.progress)
        speeds[name] = n / (time.perf_counter() - start)
        train, heldout = tr.split(cfg.heldout_fraction, seed=int(seeds[2]))
        train.save(out / name)
        heldout.save(out / f"{name}_heldout")
        stats[name] = {"eps": eps, "success_rate": tr.meta["success_rate"], "all": _sizes(tr),
                       "train": _sizes(train), "heldout": _sizes(heldout) if len(heldout) else None,
                       "generation_episodes_per_s": speeds[name]}
        print(f"[data] {name}: {len(train)} train + {len(heldout)} heldout episodes ({tr.num_steps} steps, "
              f"eps={eps}) -> {out / name}, {out / (name + '_heldout')}")

    pre = expert_stats(None, cfg.stats_episodes, int(seeds[3]), batch_size=cfg.batch_size)
    post = expert_stats(POST_TRAINING_TASK, cfg.stats_episodes, int(seeds[4]), batch_size=cfg.batch_size)
    post_any = expert_stats(POST_TRAINING_TASK, cfg.stats_episodes, int(seeds[5]), batch_size=cfg.batch_size,
                            config=PinPadConfig(require_solvable_within_T=False))
    stats["expert"] = {
        "pretraining": pre,
        "post_training": post,
        "post_training_without_layout_filter": post_any,
        "entropy_nats_per_step": pre["entropy_nats_per_step"],
        "note": "eps=0 expert. Layouts are resampled when the task cannot be completed within T "
                "(PinPadConfig.require_solvable_within_T); the last entry shows the rate without that filter.",
    }
    stats["generation_episodes_per_s"] = speeds["D"]
    stats["pretraining_tasks"] = list(PRETRAINING_TASKS)
    stats["post_training_task"] = POST_TRAINING_TASK
    (out / "data_stats.json").write_text(json.dumps(stats, indent=2))
    print(f"[data] expert success: pretraining {pre['success_rate']:.4f}, post-training {post['success_rate']:.4f} "
          f"({post_any['success_rate']:.4f} without the within-T layout filter); entropy "
          f"{pre['entropy_nats_per_step']:.3f} nats/step; {speeds['D']:.0f} episodes/s")
    print(f"[data] stats -> {out / 'data_stats.json'}")
    return stats
