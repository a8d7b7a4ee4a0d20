"""BabyAI bot demonstrations as ``Trajectories`` (the pinpad datasets' format).

``generate_babyai`` rolls out minigrid's BabyAI bot (``experts/babyai_bot.py``) in batches of
``BatchedBabyAI`` episodes with the episode seeds ``seed_start, seed_start + 1, ...`` and keeps the
episodes the bot completes (it completes every GoToSeq episode we have measured; the count of dropped
ones is in ``meta``). Observations are the binary symbolic encoding of ``envs/babyai.py``, stored bit-
packed; ``subgoals`` hold the index of the mission clause the bot is carrying out (analysis only);
``tasks`` hold the mission strings.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from internal_rl.data.trajectories import Trajectories
from internal_rl.envs.babyai import ACTION_NAMES, BabyAIEnvConfig, BatchedBabyAI
from internal_rl.experts.babyai_bot import run_bot


def generate_babyai(num_episodes: int, config: BabyAIEnvConfig | None = None, seed_start: int = 0,
                    eps: float = 0.0, noise_seed: int = 0, batch_size: int = 64,
                    progress: bool = True) -> Trajectories:
    """Bot demonstrations on episode seeds ``seed_start .. seed_start + num_episodes − 1`` (successes kept)."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg = config if config is not None else BabyAIEnvConfig()
    rng = np.random.default_rng(noise_seed)
    env: BatchedBabyAI | None = None
    parts: list[Trajectories] = []  # one flat, bit-packed chunk per batch (padded float obs would be huge)
    attempted = failed_bot = truncated = 0
    start = time.perf_counter()
    bar = tqdm(total=num_episodes, desc=f"babyai bot eps={eps}", unit="ep", disable=not progress)
    while attempted < num_episodes:
        n = min(batch_size, num_episodes - attempted)
        if env is None or env.num_envs != n:
            env = BatchedBabyAI(n, config=cfg)
        seeds = seed_start + attempted + np.arange(n)
        r = run_bot(env, seeds, eps=eps, rng=rng)
        keep = r["success"]
        failed_bot += int(r["bot_failed"].sum())
        truncated += int((~keep & ~r["bot_failed"]).sum())
        if keep.any():
            parts.append(Trajectories.from_float_obs(r["obs"][keep], r["actions"][keep], r["lengths"][keep],
                                                     r["subgoals"][keep], [m for m, k in zip(r["missions"], keep) if k]))
        attempted += n
        bar.update(n)
    bar.close()
    seconds = time.perf_counter() - start
    if not parts:
        raise RuntimeError(f"the BabyAI bot completed none of {num_episodes} episodes of {cfg.level}")
    meta = {
        "env": cfg.level,
        "expert": "minigrid.utils.baby_ai_bot.BabyAIBot",
        "eps": float(eps),
        "seed_start": int(seed_start),
        "config": {"level": cfg.level, "max_steps": cfg.max_steps, "n_slots": cfg.n_slots},
        "actions": list(ACTION_NAMES),
        "subgoal_label": "index of the mission clause the bot is carrying out (execution order)",
        "attempted": int(attempted),
        "success_rate": float(sum(len(p) for p in parts) / attempted),
        "dropped_bot_failed": failed_bot,
        "dropped_not_completed": truncated,
        "episodes_per_s": attempted / max(seconds, 1e-9),
    }
    return Trajectories(np.concatenate([p.obs_flat for p in parts]), np.concatenate([p.actions_flat for p in parts]),
                        np.concatenate([p.lengths for p in parts]), np.concatenate([p.subgoals_flat for p in parts]),
                        [t for p in parts for t in p.tasks], obs_dim=cfg.obs_dim, obs_encoding="packbits", meta=meta)
