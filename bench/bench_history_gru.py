"""The history GRU's forward + backward: autograd through nn.GRU against the hand-written backward.

``internal_rl.control.history.gru_sequence`` takes the hand-written backward up to
``HAND_BACKWARD_MAX_BATCH`` rows; this script measures both paths at every batch size (the metacontroller's
GRU: input 128, hidden 32, the sizes of issue 5's comparison), alternating them so that the machine's
drift hits both alike, and prints the median of ``--repeats`` alternations (each the median of 10 calls).

Run: ``.venv/bin/python bench/bench_history_gru.py [--batch 2 4 8 16 32 64] [--T 64 256] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from internal_rl.control.history import HAND_BACKWARD_MAX_BATCH, _GRUSequence


def _median_ms(fn, calls: int = 10) -> float:
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    ap.add_argument("--T", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gru = nn.GRU(args.dim, args.hidden, batch_first=True)
    weights = (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    print(f"GRU {args.dim} -> {args.hidden}, one thread; forward + backward (weights' gradients), ms; "
          f"gru_sequence takes the hand-written path up to batch {HAND_BACKWARD_MAX_BATCH}")
    print(f"{'batch':>5} {'T':>5} | {'nn.GRU autograd':>15} | {'hand-written':>12} | ratio")
    for batch in args.batch:
        for length in args.T:
            x = torch.randn(batch, length, args.dim)
            paths = {"autograd": lambda: gru(x)[0].sum().backward(),
                     "hand": lambda: _GRUSequence.apply(x, *weights, gru).sum().backward()}
            for fn in paths.values():  # warm-up
                fn()
                fn()
            times = {k: [] for k in paths}
            for _ in range(args.repeats):
                for k, fn in paths.items():
                    times[k].append(_median_ms(fn))
            a, h = statistics.median(times["autograd"]), statistics.median(times["hand"])
            print(f"{batch:>5} {length:>5} | {a:15.2f} | {h:12.2f} | {a / h:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
