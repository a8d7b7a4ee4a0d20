"""Which of several discovery runs to keep: rank `internal-rl discover` runs by their held-out objective.

Discovery's seed decides as much as the base (docs/RESULTS.md, Sessions 24–25): on one base, runs that differ
only in ``--seed`` end anywhere from switches on every subgoal boundary to one code per episode. Picking one
must not use the subgoal labels, so this script ranks the runs by the paper's own objective on held-out D*,
NLL + α·KL per step with z̃ = μ (``heldout_objective`` in ``segmentation.json``; recomputed from
``heldout_nll`` and ``heldout_kl`` for runs written before that key existed). Lower is better. The labelled
switch F1 is printed beside it for analysis only; it plays no part in the ranking.

Run: ``python examples/rank_discovery_runs.py --runs DISC_0 DISC_1 ... [--out ranking.json]``. The runs must
share a base, data and α (their objectives are compared as numbers), which the script checks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_run(folder: str) -> dict:
    """The figures of one discover run folder (config.json + segmentation.json)."""
    path = Path(folder)
    seg_path, cfg_path = path / "segmentation.json", path / "config.json"
    if not seg_path.exists() or not cfg_path.exists():
        raise SystemExit(f"{folder}: not a finished `internal-rl discover` run (needs config.json and segmentation.json)")
    seg, cfg = json.loads(seg_path.read_text()), json.loads(cfg_path.read_text())["discover"]
    objective = seg.get("heldout_objective")
    if objective is None:  # runs written before the key existed
        objective = seg["heldout_nll"] + seg["alpha"] * seg["heldout_kl"]
    return {"run": folder, "seed": cfg["seed"], "objective": objective, "nll": seg["heldout_nll"],
            "kl": seg["heldout_kl"], "switches_per_episode": seg["switches_per_episode"], "f1": seg["f1"],
            "base": cfg["model"], "data": cfg["data"], "alpha": seg["alpha"], "layer": seg["layer"],
            "cotrain": seg["cotrain"]}


def rank(runs: list[dict]) -> list[dict]:
    """The runs, lowest held-out objective first; refuses runs whose objectives are not comparable."""
    for key in ("base", "data", "alpha", "layer", "cotrain"):
        values = {str(r[key]) for r in runs}
        if len(values) > 1:
            raise SystemExit(f"the runs differ in {key} ({', '.join(sorted(values))}): their objectives do not compare")
    return sorted(runs, key=lambda r: r["objective"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="discover run folders (one base, data and α)")
    ap.add_argument("--out", default="", help="also write the ranking to this JSON file")
    args = ap.parse_args()
    ranked = rank([read_run(r) for r in args.runs])
    print(f"{'run':32s} {'seed':>4s} {'objective':>9s} {'NLL':>7s} {'KL':>6s} {'switches':>8s} {'F1 (labels)':>11s}")
    for r in ranked:
        print(f"{r['run']:32s} {r['seed']:4d} {r['objective']:9.4f} {r['nll']:7.4f} {r['kl']:6.3f} "
              f"{r['switches_per_episode']:8.2f} {r['f1']:11.3f}")
    print(f"keep: {ranked[0]['run']} (lowest held-out objective)")
    if args.out:
        Path(args.out).write_text(json.dumps({"keep": ranked[0]["run"], "ranking": ranked}, indent=2))


if __name__ == "__main__":
    main()
