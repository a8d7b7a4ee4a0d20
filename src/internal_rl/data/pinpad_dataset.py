"""Expert demonstrations on gridworld-pinpad: the paper's datasets D (ε-noisy expert) and D* (ε=0).

Both are ``generate_pinpad`` calls: episodes are rolled out in batches with ``BatchedPinPad`` and
``ShortestPathExpert`` and stored as (flat, ragged) ``Trajectories`` with bit-packed observations.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from internal_rl.data.trajectories import Trajectories
from internal_rl.envs.pinpad import ENV_ID, PRETRAINING_TASKS, BatchedPinPad, PinPadConfig, parse_task
from internal_rl.experts.pinpad_expert import ShortestPathExpert


def generate_pinpad(num_episodes: int, eps: float = 0.0, tasks: Sequence[str] | None = None, seed: int = 0,
                    batch_size: int = 4096, progress: bool = True,
                    config: PinPadConfig | None = None) -> Trajectories:
    """Roll out the (ε-noisy) shortest-path expert for ``num_episodes`` episodes and return them.

    ``tasks``: the task strings to draw from uniformly per episode (default: the 16 pretraining
    tasks). Every episode is kept (including the rare ε-noisy ones that time out); the returned
    ``meta`` records env, eps, seed, config and the success rate.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg = config if config is not None else PinPadConfig()
    task_pool = list(PRETRAINING_TASKS if tasks is None else tasks)
    if not task_pool:
        raise ValueError("tasks must not be empty")
    for t in task_pool:
        parse_task(t, cfg.n_colors)
    seeds = np.random.SeedSequence(seed).spawn(2)
    env_rng, expert_rng = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    expert = ShortestPathExpert(eps)
    t_cap = cfg.max_steps
    chunks = []  # per batch, flat: (packed obs, actions, lengths, subgoals, tasks, success)
    env: BatchedPinPad | None = None
    bar = tqdm(total=num_episodes, desc=f"pinpad eps={eps}", unit="ep", disable=not progress)
    done_eps = 0
    while done_eps < num_episodes:
        n = min(batch_size, num_episodes - done_eps)
        if env is None or env.num_envs != n:
            env = BatchedPinPad(n, cfg, copy_obs=False)
        env.rng = env_rng
        batch_tasks = [task_pool[i] for i in env_rng.integers(len(task_pool), size=n)]
        obs = env.reset(batch_tasks)
        packed = np.zeros((n, t_cap + 1, (cfg.obs_dim + 7) // 8), dtype=np.uint8)
        actions = np.zeros((n, t_cap), dtype=np.int64)
        subgoals = np.full((n, t_cap), -1, dtype=np.int64)
        lengths = np.zeros(n, dtype=np.int64)
        packed[:, 0] = np.packbits(obs != 0, axis=-1)
        for t in range(t_cap):
            live = np.flatnonzero(~env.done)
            if live.size == 0:
                break
            a = expert.act(env, expert_rng)
            subgoals[live, t] = env.subgoal[live]
            actions[live, t] = a[live]
            obs, *_ = env.step(a)
            packed[live, t + 1] = np.packbits(obs[live] != 0, axis=-1)
            lengths[live] += 1
        # Keep the chunk flat (ragged): o_0..o_length and a_0..a_{length-1} of each episode.
        steps = np.arange(t_cap)[None, :] < lengths[:, None]
        frames = np.arange(t_cap + 1)[None, :] <= lengths[:, None]
        chunks.append((packed[frames], actions[steps], lengths, subgoals[steps], batch_tasks, env.success.copy()))
        done_eps += n
        bar.update(n)
    bar.close()

    obs_all = np.concatenate([c[0] for c in chunks])
    actions_all = np.concatenate([c[1] for c in chunks])
    lengths_all = np.concatenate([c[2] for c in chunks])
    subgoals_all = np.concatenate([c[3] for c in chunks])
    tasks_all = [t for c in chunks for t in c[4]]
    success = np.concatenate([c[5] for c in chunks])
    meta = {
        "env": ENV_ID,
        "expert": "ShortestPathExpert",
        "eps": float(eps),
        "seed": seed,
        "config": dataclasses.asdict(cfg),
        "task_pool": task_pool,
        "success_rate": float(success.mean()),
    }
    return Trajectories(obs_all, actions_all, lengths_all, subgoals_all, tasks_all, obs_dim=cfg.obs_dim,
                        obs_encoding="packbits", meta=meta)
