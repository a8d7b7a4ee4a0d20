"""Which of several discovery runs to keep: rank `internal-rl discover` runs by their held-out objective.

Discovery's seed decides as much as the base (docs/RESULTS.md, Sessions 24–25): on one base, runs that differ
only in ``--seed`` end anywhere from switches on every subgoal boundary to one code per episode. Picking one
must not use the subgoal labels, so this script ranks the runs by the paper's own objective on held-out D*,
NLL + α·KL per step with z̃ = μ (``heldout_objective`` in ``segmentation.json``; recomputed from
``heldout_nll`` and ``heldout_kl`` for runs written before that key existed). Lower is better. The labelled
switch F1 is printed beside it for analysis only; it plays no part in the ranking.

Run: ``python examples/rank_discovery_runs.py --runs DISC_0 DISC_1 ... [--out ranking.json]``. The runs must
share a base, data, α and step count (their objectives are compared as numbers, and every run's objective keeps
falling with training), which the script checks.

``--bootstrap R``: are the gaps real? Recomputes every run's objective episode by episode on the same held-out
episodes (``--episodes``, default as many as the runs were scored on; ``--model``/``--data`` when the paths in
the runs' config.json are relative to another directory) and gives, for each run and the one ranked above it, the
difference in nats per step with a 95 % paired bootstrap interval over episodes (R resamples).
``--best-of``: how often keeping the lowest objective of K runs yields a good segmentation, over every K-subset
of the runs (this one reads the labelled F1: an analysis of the rule, not part of it).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np


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
            "cotrain": seg["cotrain"], "steps": seg.get("steps"), "episodes": seg.get("episodes"),
            "switches_at_boundaries": seg.get("switches_at_boundaries"),
            "switches_at_mid_events": seg.get("switches_at_mid_events")}


def rank(runs: list[dict]) -> list[dict]:
    """The runs, lowest held-out objective first; refuses runs whose objectives are not comparable."""
    # steps too: the objective keeps falling with training, so a longer misplaced run can undercut a clean one
    for key in ("base", "data", "alpha", "layer", "cotrain", "steps"):
        values = {str(r[key]) for r in runs}
        if len(values) > 1:
            raise SystemExit(f"the runs differ in {key} ({', '.join(sorted(values))}): their objectives do not compare")
    return sorted(runs, key=lambda r: r["objective"])


def episode_objectives(run: dict, model: str, data: str, episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per held-out episode: the sum over its steps of NLL + α·KL (z̃ = μ), and its number of steps."""
    import torch

    from internal_rl.control.discovery import discovery_step
    from internal_rl.data.trajectories import Trajectories
    from internal_rl.models.sequence_model import freeze
    from internal_rl.phases.discover import load_base, load_metacontroller

    held = Trajectories.load(Path(data) / "D_star_heldout")
    batch = held.batch(np.arange(min(episodes, len(held))))
    base = freeze(load_base(run["run"], model)).eval()
    mc, layer = load_metacontroller(run["run"])
    with torch.no_grad():
        losses, _ = discovery_step(base, mc.eval(), batch, layer, run["alpha"], sample=False)
    return losses["episode_loss"].double().numpy(), losses["episode_steps"].double().numpy()


def paired_bootstrap(worse: np.ndarray, better: np.ndarray, steps: np.ndarray, resamples: int,
                     seed: int = 0) -> dict:
    """Objective difference (worse − better, nats per step) over the same episodes, with a 95 % interval
    from resampling episodes with replacement (both runs resampled alike: the pairing removes the spread
    that comes from which episodes were drawn)."""
    idx = np.random.default_rng(seed).integers(0, len(steps), (resamples, len(steps)))
    diffs = (worse[idx].sum(1) - better[idx].sum(1)) / steps[idx].sum(1)
    return {"difference": float((worse.sum() - better.sum()) / steps.sum()),
            "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
            "share_positive": float((diffs > 0).mean())}


def best_of_k(runs: list[dict]) -> list[dict]:
    """For each K, over every K-subset of the runs: the labelled F1 of the run the objective keeps."""
    rows = []
    for k in range(1, len(runs) + 1):
        kept = np.array([min(sub, key=lambda r: r["objective"])["f1"] for sub in itertools.combinations(runs, k)])
        rows.append({"k": k, "subsets": len(kept), "f1_median": float(np.median(kept)),
                     "share_f1_at_least_0.9": float((kept >= 0.9).mean()),
                     "share_f1_at_least_0.85": float((kept >= 0.85).mean())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="discover run folders (one base, data, α and step count)")
    ap.add_argument("--out", default="", help="also write the ranking to this JSON file")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="R",
                    help="paired bootstrap of each gap over held-out episodes with R resamples (0: off)")
    ap.add_argument("--episodes", type=int, default=0, help="held-out episodes for --bootstrap (0: as scored)")
    ap.add_argument("--model", default="", help="the base model folder (default: the runs' config.json)")
    ap.add_argument("--data", default="", help="the data folder (default: the runs' config.json)")
    ap.add_argument("--best-of", action="store_true", help="F1 kept by the objective among K runs, every K")
    args = ap.parse_args()
    if args.bootstrap < 0 or args.episodes < 0:
        raise SystemExit("--bootstrap and --episodes must be >= 0")
    ranked = rank([read_run(r) for r in args.runs])
    print(f"{'run':32s} {'seed':>4s} {'objective':>9s} {'NLL':>7s} {'KL':>6s} {'switches':>8s} {'F1 (labels)':>11s}"
          f" {'at bounds / mid':>15s}")
    for r in ranked:
        sites = (f"{r['switches_at_boundaries']:.2f} / {r['switches_at_mid_events']:.2f}"
                 if r["switches_at_mid_events"] is not None else "")
        print(f"{r['run']:32s} {r['seed']:4d} {r['objective']:9.4f} {r['nll']:7.4f} {r['kl']:6.3f} "
              f"{r['switches_per_episode']:8.2f} {r['f1']:11.3f} {sites:>15s}")
    print(f"keep: {ranked[0]['run']} (lowest held-out objective)")
    result: dict = {"keep": ranked[0]["run"], "ranking": ranked}
    if args.bootstrap:
        model, data = args.model or ranked[0]["base"], args.data or ranked[0]["data"]
        for path, flag in ((model, "--model"), (data, "--data")):
            if not Path(path).exists():
                raise SystemExit(f"{path} not found (the runs' config.json path); pass {flag}")
        episodes = args.episodes or ranked[0]["episodes"] or 1000
        per = [episode_objectives(r, model, data, episodes) for r in ranked]
        for r, (sums, steps) in zip(ranked, per):  # equals `objective` when scored on the same episodes
            r["objective_recomputed"] = float(sums.sum() / steps.sum())
        result["bootstrap"] = []
        for (better, (b_sum, steps)), (worse, (w_sum, _)) in zip(zip(ranked, per), list(zip(ranked, per))[1:]):
            gap = paired_bootstrap(w_sum, b_sum, steps, args.bootstrap)
            gap.update(worse=worse["run"], better=better["run"], episodes=len(steps))
            result["bootstrap"].append(gap)
            print(f"{worse['run']} - {better['run']}: {gap['difference']:+.5f} nats/step, 95 % paired bootstrap "
                  f"[{gap['ci95'][0]:+.5f}, {gap['ci95'][1]:+.5f}] over {len(steps)} episodes")
    if args.best_of:
        result["best_of"] = best_of_k(ranked)
        for row in result["best_of"]:
            print(f"best of {row['k']} ({row['subsets']} subsets): kept F1 median {row['f1_median']:.3f}, "
                  f">= 0.9 in {row['share_f1_at_least_0.9']:.0%}, >= 0.85 in {row['share_f1_at_least_0.85']:.0%}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
