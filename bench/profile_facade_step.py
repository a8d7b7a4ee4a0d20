"""Where the time of one cached rollout step of the seed API goes (internal_rl.Transformer + MetaController).

The rollout goal of issue 5 (≥ 10× metacontroller-pytorch per step) leaves a fixed budget per step; this
script measures the parts that budget has to cover, at the sizes of bench/compare_metacontroller_pytorch.py
(dim 128, depth 2 + 2, dim_meta_controller 64, dim_latent 32, state 96, 4 actions, one thread):

- the model step alone (``model(...)`` with the cache) and the benchmark's own sampling beside it
  (``Categorical(...).sample()`` and ``mc.log_prob``, which the comparison pays for both packages);
- how many torch ops one step issues (``torch.profiler``: top-level calls and all calls);
- one ``F.linear`` of a (B, 128) batch by a 128 × 512 weight, the size of the widest layers of the step;
- how many of those calls are matrix products (``addmm``/``mm``/``bmm``/``matmul``/``linear``; the
  profiler's own overhead inflates per-op times at this size, so only counts are printed).

Run: ``.venv/bin/python bench/profile_facade_step.py [--batch 2 32] [--T 128] [--repeats 5]``.
Every time is the median over ``repeats`` T-step rollouts (or call loops), after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from seed_sizes import ACTIONS, STATE, build_ours


def build(batch: int, T: int):
    """The comparison's model, metacontroller and random states."""
    torch.manual_seed(0)
    model, mc = build_ours()
    return model, mc, torch.randn(batch, T, STATE)


def rollout(model, mc, state: torch.Tensor, steps: int, sample: bool) -> float:
    """Mean ms per step of a `steps`-step cached rollout; `sample` adds the benchmark's sampling and log-prob."""
    cache, past = None, None
    gen = torch.Generator().manual_seed(0)
    fixed = torch.zeros(state.shape[0], 1, dtype=torch.long)
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in range(steps):
            logits, cache = model(state[:, t:t + 1], past, meta_controller=mc, return_cache=True, cache=cache)
            if sample:
                m = cache.prev_hiddens.meta_controller
                mc.log_prob(m.action_dist, m.actions)
                past = torch.distributions.Categorical(logits=logits).sample()
            else:
                past = fixed.random_(0, ACTIONS, generator=gen)
    return 1e3 * (time.perf_counter() - t0) / steps


def op_counts(model, mc, state: torch.Tensor, steps: int) -> tuple[float, float, dict[str, float]]:
    """Top-level and total aten op calls per model step, and the matrix-product calls per step by op."""
    from torch.profiler import ProfilerActivity, profile

    cache, past = None, None
    fixed = torch.zeros(state.shape[0], 1, dtype=torch.long)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for t in range(steps):
            _, cache = model(state[:, t:t + 1], past, meta_controller=mc, return_cache=True, cache=cache)
            past = fixed
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top = sum(1 for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    mm: dict[str, float] = {}
    for e in events:
        if e.name in ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear"):
            mm[e.name] = mm.get(e.name, 0.0) + 1.0 / steps
    return top / steps, len(events) / steps, mm


def linear_us(batch: int, repeats: int, calls: int = 2000) -> float:
    """Median µs of one F.linear of a (batch, 128) input by a 512 × 128 weight (with bias)."""
    x, w, b = torch.randn(batch, 128), torch.randn(512, 128), torch.randn(512)
    for _ in range(200):
        F.linear(x, w, b)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            F.linear(x, w, b)
        runs.append(1e6 * (time.perf_counter() - t0) / calls)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[2, 32])
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.T < 2 or args.repeats < 1 or min(args.batch) < 1:
        raise SystemExit("--T must be ≥ 2, --repeats ≥ 1 and every --batch ≥ 1")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, T {args.T}, median of {args.repeats}")
    for batch in args.batch:
        model, mc, state = build(batch, args.T)
        rollout(model, mc, state, 8, True)
        step = statistics.median(rollout(model, mc, state, args.T, False) for _ in range(args.repeats))
        full = statistics.median(rollout(model, mc, state, args.T, True) for _ in range(args.repeats))
        top, total, mm = op_counts(model, mc, state, args.T)
        lin = linear_us(batch, args.repeats)
        print(f"B {batch:4d}: model step {step:.3f} ms, with the benchmark's sampling {full:.3f} ms "
              f"(sampling {full - step:.3f} ms); {top:.0f} top-level / {total:.0f} total aten ops per step; "
              f"one (B,128)x(128,512) linear {lin:.1f} us")
        print("    matrix products per step: " + ", ".join(f"{k[6:]} {v:.1f}" for k, v in sorted(mm.items())))


if __name__ == "__main__":
    main()
