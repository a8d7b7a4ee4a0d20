"""Per-step time of a cached rollout through the seed API (internal_rl.Transformer + MetaController).

The same loop and sizes as the rollout part of bench/compare_metacontroller_pytorch.py (dim 128, depth 2 + 2,
dim_meta_controller 64, dim_latent 32, state 96, 4 actions, one thread), without their package, so that two
versions of this library can be compared side by side, e.g. an older commit via ``PYTHONPATH=OLD/src``.

Run: ``.venv/bin/python bench/bench_facade_rollout.py [--batch 2 32] [--T 128] [--repeats 3] [--compiled]``.
Prints the mean ms/step of each of ``repeats`` T-step rollouts (after a warm-up rollout). ``--compiled``
times the step after ``model.compile_rollout()`` (static shapes through torch.compile), eager and compiled
side by side in one run, and prints how long the compiling first step took. ``--dtype bfloat16`` casts the
model and the metacontroller to bf16 first (weights, activations and the KV cache; the step's numbers then
differ from float32 at bf16 precision).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[2, 32])
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compiled", action="store_true", help="also time the compiled step, alternating with eager")
    ap.add_argument("--max-len", type=int, default=0,
                    help="initial KV-cache capacity (doubles when full; 0: the rollout length T)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="parameters, activations and cache of the rollout")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from seed_sizes import STATE, build_ours

    for batch in args.batch:
        torch.manual_seed(0)
        model, mc = build_ours(max_len=args.max_len or args.T)
        model.to(getattr(torch, args.dtype))
        mc.to(getattr(torch, args.dtype))
        state = torch.randn(batch, args.T, STATE)

        def roll(steps: int) -> float:
            cache, past = None, None
            t0 = time.perf_counter()
            with torch.no_grad():
                for t in range(steps):
                    logits, cache = model(state[:, t:t + 1], past, meta_controller=mc, return_cache=True, cache=cache)
                    m = cache.prev_hiddens.meta_controller
                    mc.log_prob(m.action_dist, m.actions)  # what a rollout records, as in the comparison
                    past = torch.distributions.Categorical(logits=logits.float()).sample()
            return 1e3 * (time.perf_counter() - t0) / steps

        modes = ["eager", "compiled"] if args.compiled else ["eager"]
        times: dict[str, list[float]] = {m: [] for m in modes}
        for mode in modes:
            model.compile_rollout(mode == "compiled")
            t0 = time.perf_counter()
            roll(1)
            if mode == "compiled":
                print(f"batch {batch:3d}: the compiling first step took {time.perf_counter() - t0:.1f} s")
            roll(args.T)  # warm-up: a whole rollout
        for _ in range(args.repeats):  # alternate, so that both modes see the same machine load
            for mode in modes:
                model.compile_rollout(mode == "compiled")  # the compiled step is cached: no recompiling
                times[mode].append(roll(args.T))
        for mode in modes:
            print(f"batch {batch:3d}  T {args.T} {mode:8s}: " + ", ".join(f"{x:.3f}" for x in times[mode]) + " ms/step")


if __name__ == "__main__":
    main()
