"""Benchmark gridworld-pinpad: batched env steps/s and expert+env episodes/s on one thread.

Run: ``python bench/bench_env.py``. Random actions; envs that finish are reset in place
(``reset(env_ids=...)``) so every counted step is a live one. Figures are medians of several runs.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from internal_rl.envs.pinpad import POST_TRAINING_TASK, BatchedPinPad  # noqa: E402
from internal_rl.experts.pinpad_expert import ShortestPathExpert  # noqa: E402


def env_steps_per_s(num_envs: int, steps: int, copy_obs: bool, seed: int = 0) -> tuple[float, float]:
    """(steps/s including auto-reset, steps/s of ``step`` alone) for random actions at batch ``num_envs``.

    Finished envs are reset in place after every step, so every counted step is a live one.
    """
    env = BatchedPinPad(num_envs, seed=seed, copy_obs=copy_obs)
    env.reset()
    actions = np.random.default_rng(seed).integers(4, size=(steps, num_envs))
    in_step = 0.0
    start = time.perf_counter()
    for t in range(steps):
        t0 = time.perf_counter()
        env.step(actions[t])
        in_step += time.perf_counter() - t0
        done = np.flatnonzero(env.done)
        if done.size:
            env.reset(env_ids=done)
    total = time.perf_counter() - start
    return steps * num_envs / total, steps * num_envs / in_step


def expert_episodes_per_s(num_envs: int, task: str | None, seed: int = 0) -> float:
    """Episodes/s of the ε=0 expert rolling out ``num_envs`` full episodes (reset included)."""
    expert = ShortestPathExpert(0.0)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    env = BatchedPinPad(num_envs, seed=seed, copy_obs=False)
    env.reset(task)
    while not env.done.all():
        env.step(expert.act(env, rng))
    return num_envs / (time.perf_counter() - start)


def main() -> None:
    """Print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("gridworld-pinpad, one thread, median of", args.repeats, "runs")
    header = ["with auto-reset", "step() alone"]
    print(f"{'batch':>6}" + "".join(f"{h + ', ' + c:>26}" for c in ("copy", "view") for h in header) + "   (steps/s)")
    for n in (1, 64, 1024):
        steps = {1: 3000, 64: 1000, 1024: 300}[n]
        row = []
        for copy_obs in (True, False):
            runs = np.array([env_steps_per_s(n, steps, copy_obs, seed=s) for s in range(args.repeats)])
            row += list(np.median(runs, axis=0))
        print(f"{n:>6}" + "".join(f"{r:>26,.0f}" for r in row))
    print("Random actions; finished envs are reset every step (random-action episodes last ~13 steps).")
    print("copy: obs returned as a fresh array (default); view: copy_obs=False returns the internal buffer.")
    for task, name in ((None, "pretraining"), (POST_TRAINING_TASK, "post-training")):
        runs = [expert_episodes_per_s(4096, task, seed=s) for s in range(args.repeats)]
        print(f"expert+env, {name:>13} tasks, batch 4096: {np.median(runs):,.0f} episodes/s")


if __name__ == "__main__":
    main()
