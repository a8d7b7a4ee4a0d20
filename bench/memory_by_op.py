"""Which torch ops make the seed-API process's memory grow (issue 5's memory goal, the part above `import torch`).

bench/memory_breakdown.py shows that after `import torch` the process grows by about 40 MiB, half of it
file-backed pages of torch's own libraries touched for the first time. This script asks whether a few ops
own that growth: it runs the same sizes (dim 128, depth 2 + 2, dim_meta_controller 64, dim_latent 32, state 96,
4 actions, one thread) under a ``TorchDispatchMode`` that reads /proc/self/smaps_rollup around every aten op
while the model and metacontroller are built and two discovery steps (forward and backward) run. It prints the
growth inside ops against the whole growth (the rest happens in dispatch, autograd and Python between ops),
split into file-backed and anonymous pages, and the ops with the largest file-backed growth. The mode runs
Python around every op, which itself allocates: read the file-backed figures (code pages of torch's libraries),
not the anonymous total, which here is several times what the process grows without the mode.

Run (Linux): ``.venv/bin/python bench/memory_by_op.py [--batch 2] [--T 64] [--top 15]``.
"""

from __future__ import annotations

import argparse
import collections

from memory_breakdown import rss_kib


def _rss_kib() -> tuple[int, int]:
    """(file-backed, anonymous) resident KiB of this process."""
    rss, anon = rss_kib()
    return rss - anon, anon


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2, help="discovery steps (forward + backward) to run")
    ap.add_argument("--top", type=int, default=15, help="ops to list, largest file-backed growth first")
    args = ap.parse_args()

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    torch.set_num_threads(1)
    from seed_sizes import ACTIONS, STATE, build_ours

    file_kib: collections.Counter[str] = collections.Counter()
    anon_kib: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    class Attribute(TorchDispatchMode):
        """Charge each op with the resident-memory growth seen across its own call."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            f0, a0 = _rss_kib()
            out = func(*args, **(kwargs or {}))
            f1, a1 = _rss_kib()
            name = str(func)
            file_kib[name] += f1 - f0
            anon_kib[name] += a1 - a0
            calls[name] += 1
            return out

    f_start, a_start = _rss_kib()
    with Attribute():
        model, mc = build_ours(max_len=max(args.T, 128))
        state = torch.randn(args.batch, args.T, STATE)
        actions = torch.randint(0, ACTIONS, (args.batch, args.T))
        for _ in range(args.steps):
            mc.zero_grad(set_to_none=True)
            sum(model(state, actions, meta_controller=mc, discovery_phase=True)).backward()
    f_end, a_end = _rss_kib()

    mib = 1 / 1024
    print(f"batch {args.batch}, T {args.T}, {args.steps} discovery steps, {sum(calls.values())} op calls, "
          f"{len(calls)} distinct ops")
    print(f"file-backed growth {(f_end - f_start) * mib:6.1f} MiB, inside ops {sum(file_kib.values()) * mib:6.1f} MiB")
    print(f"anonymous growth   {(a_end - a_start) * mib:6.1f} MiB, inside ops {sum(anon_kib.values()) * mib:6.1f} MiB")
    print("largest file-backed growth by op (MiB file, MiB anonymous, calls):")
    for name, kib in file_kib.most_common(args.top):
        print(f"  {kib * mib:6.2f} {anon_kib[name] * mib:6.2f} {calls[name]:5d}  {name}")


if __name__ == "__main__":
    main()
