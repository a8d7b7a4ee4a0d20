"""Curves phase: training success of finished or running `rl` runs, side by side, grouped into methods.

Reads each run's metrics.csv (one row per PPO iteration, kept across `--resume`), so it also works on a run
that is still going. Runs that share a label are seeds of one method: the plot shows their median and
25–75 % band against episodes and against primitive env steps, up to the length of the group's shortest
run. Per run it reports when training took off (the first batch with success at or above `takeoff`), the
mean batch success of the last `last` iterations, and the fresh-episode evaluation of results.json when
that evaluation belongs to the last row (a run resumed for more episodes keeps its older results.json
until it finishes). Writes curves.json and curves.png. No model is run.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from internal_rl.analysis.plots import plot_success_curves
from internal_rl.phases.common import write_json

_COLUMNS = ("episodes", "env_steps", "success")


@dataclass
class CurvesConfig:
    """Configuration of the curves analysis."""

    runs: list[str] = field(default_factory=list)
    """`rl` run folders (each with metrics.csv)."""
    labels: list[str] = field(default_factory=list)
    """One label per run; runs with the same label are pooled as seeds (default: the folder names, so folders of
    the same name, e.g. SEED_DIR/rl in every seed's folder, are pooled)."""
    takeoff: float = 0.05
    """Batch success rate that counts as taking off."""
    last: int = 10
    """Iterations averaged for the final batch success."""
    out: str = "runs/demo/curves"
    """Output folder: curves.json, curves.png."""


def read_curve(run: str | Path) -> list[dict]:
    """[{episodes, env_steps, success}] per PPO iteration, from a run folder's metrics.csv."""
    path = Path(run) / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (is {run} an `rl` run folder?)")
    with open(path) as f:
        reader = csv.DictReader(f)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} (not written by `rl`?)")
        rows = [{c: float(r[c]) for c in _COLUMNS} for r in reader]
    if not rows:
        raise ValueError(f"{path}: no rows yet")
    return rows


def summarize(curve: list[dict], takeoff: float, last: int) -> dict:
    """Take-off point, final batch success (mean of the last `last` rows) and the totals of one curve."""
    if last < 1:
        raise ValueError(f"last must be at least 1, got {last}")
    up = next((p for p in curve if p["success"] >= takeoff), None)
    return {"iterations": len(curve), "episodes": int(curve[-1]["episodes"]), "env_steps": int(curve[-1]["env_steps"]),
            "takeoff_episodes": None if up is None else int(up["episodes"]),
            "takeoff_env_steps": None if up is None else int(up["env_steps"]),
            "last_batch_success": float(np.mean([p["success"] for p in curve[-last:]]))}


def _evaluation(run: Path, episodes: int) -> dict:
    """results.json's fresh-episode success, if it was measured at the curve's last row."""
    path = run / "results.json"
    if not path.exists():
        return {"final_success": None, "note": "no results.json (still running?)"}
    res = json.loads(path.read_text())
    if int(res.get("episodes", -1)) != episodes:
        return {"final_success": None,
                "note": f"results.json is from {res.get('episodes')} episodes, the curve reaches {episodes}"}
    mean_z = res.get("final_success_mean_z")  # z-space runs since Session 22: acting with the policy's mean
    return {"final_success": float(res["final_success"]), "eval_episodes": int(res.get("eval_episodes", 0)),
            "final_success_mean_z": None if mean_z is None else float(mean_z)}


def run_curves(cfg: CurvesConfig) -> dict:
    """Summaries per run and per label; write curves.json and curves.png."""
    if not cfg.runs:
        raise ValueError("give at least one rl run folder with --runs")
    if cfg.labels and len(cfg.labels) != len(cfg.runs):
        raise ValueError(f"got {len(cfg.labels)} labels for {len(cfg.runs)} runs")
    labels = cfg.labels or [Path(r).name for r in cfg.runs]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, grouped = [], {}
    for label, run in zip(labels, cfg.runs):
        curve = read_curve(run)
        s = summarize(curve, cfg.takeoff, cfg.last)
        s.update(_evaluation(Path(run), s["episodes"]))
        runs.append({"label": label, "run": str(run), **s})
        grouped.setdefault(label, []).append(curve)
        final = "not evaluated" if s["final_success"] is None else f"{s['final_success']:.3f} on fresh episodes"
        if s.get("final_success_mean_z") is not None:
            final += f" ({s['final_success_mean_z']:.3f} with the mean z)"
        print(f"[curves] {label} ({run}): {s['episodes']} episodes, took off at {s['takeoff_episodes']}, "
              f"last-{cfg.last} batch success {s['last_batch_success']:.3f}, final {final}")
    methods = {}
    for label in grouped:
        mine = [r for r in runs if r["label"] == label]
        finals = [r["final_success"] for r in mine if r["final_success"] is not None]
        means = [r["final_success_mean_z"] for r in mine if r.get("final_success_mean_z") is not None]
        methods[label] = {"seeds": len(mine),
                          "last_batch_success_median": float(np.median([r["last_batch_success"] for r in mine])),
                          "final_success_median": float(np.median(finals)) if finals else None,
                          "evaluated_seeds": len(finals),
                          # over the seeds that have it (runs older than the mean-z score lack it)
                          "final_success_mean_z_median": float(np.median(means)) if means else None}
    res = {"takeoff": cfg.takeoff, "last": cfg.last, "runs": runs, "methods": methods}
    write_json(out / "curves.json", res)
    plot_success_curves(grouped, out / "curves.png")
    return res
