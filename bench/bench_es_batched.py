"""Time of one ES generation through the seed API, member by member against the whole population in one batch.

``model.evolve(..., batched=False)`` calls the environment once per population member (P rollouts of E
episodes); ``batched=True`` calls it once with the policy acting as the whole population
(``rl.policy.PopulationPolicy``: one rollout of P·E episodes, rows i·E .. (i+1)·E − 1 acting with member i).
The environment is a rollout on gridworld-pinpad's post-training task (random weights, so episodes end
early on a wrong colour) returning each episode's progress; the model has the comparison's sizes (dim 128,
depth 2 + 2, dim_meta_controller 64, dim_latent 32), one thread.

Run: ``.venv/bin/python bench/bench_es_batched.py [--population 8] [--episodes 16] [--repeats 3]``.
Prints seconds per generation for each mode, alternating the modes ``repeats`` times.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=16, help="episodes per member")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from internal_rl import MetaController, Transformer
    from internal_rl.envs.pinpad import POST_TRAINING_TASK, BatchedPinPad

    torch.manual_seed(0)
    model = Transformer(128, action_embed_readout=dict(num_discrete=4), state_embed_readout=dict(num_continuous=637),
                        lower_body=dict(depth=2), upper_body=dict(depth=2), heads=4, dim_head=32, ff_mult=4.0)
    model.meta_controller = MetaController(128, dim_meta_controller=64, dim_latent=32)

    def rollout_progress(model: Transformer, n: int) -> torch.Tensor:
        env = BatchedPinPad(n, seed=1)
        obs = torch.from_numpy(env.reset(POST_TRAINING_TASK))
        past, cache = None, None
        with torch.no_grad():
            while not env.done.all():
                logits, cache = model(obs, past, return_cache=True, cache=cache)
                past = torch.distributions.Categorical(logits=logits).sample()
                obs = torch.from_numpy(env.step(past.numpy())[0])
        return torch.from_numpy(env.progress.astype(np.float32))

    def one_member(model: Transformer) -> float:
        return float(rollout_progress(model, args.episodes).mean())

    def population(model: Transformer) -> torch.Tensor:
        return rollout_progress(model, args.episodes * model.meta_controller.policy.population)

    times: dict[str, list[float]] = {"member by member": [], "batched": []}
    for _ in range(args.repeats):
        for mode in times:
            t0 = time.perf_counter()
            if mode == "batched":
                model.evolve(1, population, population_size=args.population, batched=True)
            else:
                model.evolve(1, one_member, population_size=args.population)
            times[mode].append(time.perf_counter() - t0)
    for mode, ts in times.items():
        print(f"P {args.population}, {args.episodes} episodes each, {mode:16s}: "
              + ", ".join(f"{t:.2f}" for t in ts) + " s/generation")


if __name__ == "__main__":
    main()
