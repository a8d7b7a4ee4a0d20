"""Does a base's worst pair-choice NLL on the post-training task tell which bases its controllers can steer?

For each pretrained base give its ``internal-rl probe`` folder and its ``internal-rl controllers`` folder.
The script prints, per base, the teacher-forced NLL at every pair choice of the post-training task (even
colour counts from 2 on: the steps heading for the next pair, every transition one pretraining never
shows), its maximum (``post_task_pair_choice_nll_max``), and the ground-truth controllers' post-task
success per layer; it plots the maximum against the best layer's success.

Run: ``python examples/steerability_check.py --runs PROBE_DIR:CONTROLLERS_DIR[:LABEL] ... --out FIG.png``.
(docs/RESULTS.md, Session 16: on eleven quick-recipe bases, every one at 2 nats or more had controllers
at ≤ 0.02.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from internal_rl.analysis.progress_nll import pair_choice_nll_max, pair_choice_nlls


def read_run(spec: str) -> dict:
    """``PROBE_DIR:CONTROLLERS_DIR[:LABEL]`` → the figures of one base."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"--runs takes PROBE_DIR:CONTROLLERS_DIR[:LABEL], got {spec!r}")
    probe = json.loads((Path(parts[0]) / "probes.json").read_text())
    ctrl = json.loads((Path(parts[1]) / "controllers.json").read_text())
    rows = probe["post_task_nll_by_colours_visited"]
    return {"label": parts[2] if len(parts) == 3 else Path(parts[0]).name,
            "pair_choice_nll": pair_choice_nlls(rows),
            "pair_choice_nll_max": pair_choice_nll_max(rows),
            "layers": ctrl["layers"], "post_task_success": ctrl["post_task_success"],
            "best_post_task_success": ctrl["best_post_task_success"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--out", default="steerability_check.png")
    args = ap.parse_args()
    runs = sorted((read_run(s) for s in args.runs), key=lambda r: r["pair_choice_nll_max"])
    for r in runs:
        success = ", ".join(f"layer {layer}: {s:.3f}" for layer, s in zip(r["layers"], r["post_task_success"]))
        print(f"{r['label']:32s} pair-choice NLL {' / '.join(f'{x:.2f}' for x in r['pair_choice_nll'])}  "
              f"max {r['pair_choice_nll_max']:.2f}  controllers {success}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["pair_choice_nll_max"] for r in runs], [r["best_post_task_success"] for r in runs])
    for r in runs:
        ax.annotate(r["label"], (r["pair_choice_nll_max"], r["best_post_task_success"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("worst teacher-forced pair-choice NLL on the post-training task (nats)")
    ax.set_ylabel("ground-truth controllers, post-task success\n(best layer)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"plot -> {args.out}")


if __name__ == "__main__":
    main()
