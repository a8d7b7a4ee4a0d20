"""Discovery training step: time and peak memory at the quick and paper sizes, and the share of the
β/z switching recurrence (forward, and its hand-written backward) in the step.

    python bench/bench_discover.py [--threads 2] [--repeats 5] [--presets quick paper] [--device cuda]

On CUDA the recurrence's share is timed without synchronising inside the step, so read it on CPU only.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import torch

from internal_rl.control.discovery import discovery_step
from internal_rl.control.metacontroller import MetaController
from internal_rl.control.switching import _SwitchRecurrence
from internal_rl.experiments.presets import discover_config, model_config
from internal_rl.models.sequence_model import SequenceModel, freeze
from internal_rl.phases.common import resolve_device, synchronize

SIZES = {"quick": (64, 60), "paper": (512, 60)}  # (batch, T): T = a long pretraining episode


def bench(preset: str, repeats: int, dev: torch.device = torch.device("cpu")) -> None:
    torch.manual_seed(0)
    model = freeze(SequenceModel(model_config(preset))).to(dev)
    cfg = discover_config(preset, "", "", "")
    mc = MetaController(cfg.metacontroller_config(model.config.d_model)).to(dev)
    opt = torch.optim.AdamW(mc.parameters(), lr=1e-3)
    B, T = SIZES[preset]
    obs = torch.zeros(B, T + 1, model.config.obs_dim, device=dev)
    obs[..., ::13] = 1
    batch = {"obs": obs, "actions": torch.randint(0, 4, (B, T), device=dev),
             "mask": torch.ones(B, T, dtype=torch.bool, device=dev)}
    layer = model.config.control_layer

    def step():
        loss, _ = discovery_step(model, mc, batch, layer, cfg.alpha)
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()

    step()
    times, fwd, bwd = [], [], []
    orig_integrate, orig_backward = mc._integrate, _SwitchRecurrence.backward

    def timed_integrate(*a, **k):  # the whole forward of the recurrence (W_z z̃, the loop, the scan for z)
        t = time.perf_counter()
        out = orig_integrate(*a, **k)
        fwd[-1] += time.perf_counter() - t
        return out

    def timed_backward(ctx, *g):  # the loop's hand-written backward
        t = time.perf_counter()
        out = orig_backward(ctx, *g)
        bwd[-1] += time.perf_counter() - t
        return out

    mc._integrate = timed_integrate
    _SwitchRecurrence.backward = staticmethod(timed_backward)
    try:
        for _ in range(repeats):
            fwd.append(0.0)
            bwd.append(0.0)
            synchronize(dev)
            t = time.perf_counter()
            step()
            synchronize(dev)
            times.append(time.perf_counter() - t)
    finally:
        mc._integrate = orig_integrate
        _SwitchRecurrence.backward = orig_backward
    # peak memory: torch CPU allocations are visible to tracemalloc only partly, so report RSS growth too
    import resource

    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    med = statistics.median(times)
    rec = statistics.median(f + b for f, b in zip(fwd, bwd))
    print(f"{preset:6s} batch {B:4d} T {T}: step {med * 1000:8.1f} ms (median of {repeats}); β/z recurrence "
          f"forward + backward {rec * 1000:6.1f} ms = {rec / med:5.1%} of the step (forward "
          f"{statistics.median(fwd) * 1000:.1f}, backward loop {statistics.median(bwd) * 1000:.1f} ms); "
          f"peak RSS {rss1 / 1024:.0f} MiB")
    hours = med * cfg.steps * cfg.batch_size / B / 3600
    print(f"{'':6s} the preset's {cfg.steps:,} steps at batch {cfg.batch_size}: {hours:,.1f} h here at this step time, "
          f"on {dev} ({torch.get_num_threads()} CPU thread(s))")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--presets", nargs="+", default=["quick", "paper"])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (auto: CUDA when available)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    for p in args.presets:
        bench(p, args.repeats, dev)


if __name__ == "__main__":
    main()
