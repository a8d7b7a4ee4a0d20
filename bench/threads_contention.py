"""How `--threads` behaves on a busy machine: a phase timed with torch's default thread count (`--threads 0`)
and with one thread, side by side, while other processes spin on some of the cores.

Two intra-op threads on two cores run well on an idle machine; when another job holds a core they wait for
each other at every op, and a phase of many small ops can slow down several-fold (Session 24 saw the smoke
`controllers` take 40 s against 4 s). This script makes that reproducible: it builds smoke data and a smoke
base in a temporary folder, starts `--busy` spinning processes, then runs `internal-rl <phase> --preset smoke`
with each thread setting in turn, `--repeats` times alternating, and prints the median wall time of each.

    python bench/threads_contention.py [--phase controllers] [--busy 1] [--threads 0 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _spin() -> None:
    """Hold one core (a stand-in for another training job)."""
    while True:
        pass


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "internal_rl.cli", *args]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", default="controllers", choices=["controllers", "probe", "discover", "pretrain"])
    ap.add_argument("--busy", type=int, default=1, help="spinning processes running during the timings")
    ap.add_argument("--threads", type=int, nargs="+", default=[0, 1], help="thread settings to compare")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        quiet = dict(check=True, capture_output=True)
        subprocess.run(_cli("data", "--preset", "smoke", "--root", str(root), "--out", str(root / "data")), **quiet)
        subprocess.run(_cli("pretrain", "--preset", "smoke", "--root", str(root), "--no-progress", "--threads", "1"),
                       **quiet)
        spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
        for p in spinners:
            p.start()
        times: dict[int, list[float]] = {t: [] for t in args.threads}
        extra = [] if args.phase == "probe" else ["--no-progress"]  # probe has no progress bar
        try:
            for _ in range(args.repeats):
                for t in args.threads:
                    t0 = time.perf_counter()
                    subprocess.run(_cli(args.phase, "--preset", "smoke", "--root", str(root), "--threads", str(t),
                                        "--out", str(root / f"{args.phase}_{t}"), *extra), **quiet)
                    times[t].append(time.perf_counter() - t0)
        finally:
            for p in spinners:
                p.terminate()
    print(f"`internal-rl {args.phase} --preset smoke` with {args.busy} spinning process(es), "
          f"median of {args.repeats} (all runs), seconds:")
    for t, ts in times.items():
        label = "0 (torch's default)" if t == 0 else str(t)
        print(f"  --threads {label:20s} {statistics.median(ts):7.1f}   ({', '.join(f'{x:.1f}' for x in ts)})")


if __name__ == "__main__":
    main()
