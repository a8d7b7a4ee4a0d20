"""Endings phase: where episodes of the target task end, per task position, for any finished runs.

Reads the evaluation histograms that `rl` (results.json), `controllers` (controllers.json, its best layer)
and `codes` (codes.json, the target task at scale 1) write, and turns each into a hazard per position
(analysis/endings.py): of the episodes that had visited k correct colours, the fraction that ended there.
Writes endings.json and endings.png. No model is run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from internal_rl.analysis.endings import hazards
from internal_rl.analysis.plots import plot_hazards
from internal_rl.envs.pinpad import POST_TRAINING_TASK, parse_task
from internal_rl.phases.common import write_json


@dataclass
class EndingsConfig:
    """Configuration of the endings analysis."""

    runs: list[str] = field(default_factory=list)
    """Run folders (or their results.json / controllers.json / codes.json) to compare."""
    labels: list[str] = field(default_factory=list)
    """One label per run for the plot (default: the folder names)."""
    out: str = "runs/demo/endings"
    """Output folder: endings.json, endings.png."""


def _find(run: Path) -> Path:
    if run.is_file():
        return run
    for name in ("results.json", "controllers.json", "codes.json"):
        if (run / name).exists():
            return run / name
    raise FileNotFoundError(f"{run}: no results.json, controllers.json or codes.json (is the run finished?)")


def read_endings(run: str | Path) -> dict:
    """{task, progress_hist, source} of the target-task evaluation a run folder or file recorded."""
    path = _find(Path(run))
    res = json.loads(path.read_text())
    if path.name == "results.json":
        cfg = path.parent / "config.json"
        if cfg.exists() and "rl" not in json.loads(cfg.read_text()):
            raise ValueError(f"{path.parent} is not an `rl` run (its config.json has no 'rl' settings); endings "
                             "reads rl, controllers and codes runs")
        if "eval_progress_hist" not in res:
            raise ValueError(f"{path}: no eval_progress_hist (written by `rl` since Session 8; resume the run "
                             "with --episodes at its count to evaluate it again)")
        task = json.loads(cfg.read_text())["rl"]["task"] if cfg.exists() else POST_TRAINING_TASK
        return {"task": task, "progress_hist": res["eval_progress_hist"], "source": str(path)}
    if path.name == "controllers.json":
        best = int(np.argmax(res["post_task_success"]))
        return {"task": POST_TRAINING_TASK, "progress_hist": res["post_task_progress_hist"][best],
                "source": f"{path} (layer {res['layers'][best]})"}
    if path.name == "codes.json":
        rows = [c for c in res["chaining"] if c["tasks"] == "post" and c["scale"] == 1.0]
        if not rows:
            raise ValueError(f"{path}: no chaining of the target task at scale 1")
        return {"task": res["task"], "progress_hist": rows[0]["colours_visited_histogram"], "source": str(path)}
    raise ValueError(f"{path}: expected results.json, controllers.json or codes.json")


def run_endings(cfg: EndingsConfig) -> dict:
    """Hazard per task position for every run; write endings.json and endings.png."""
    if not cfg.runs:
        raise ValueError("give at least one run folder with --runs")
    if cfg.labels and len(cfg.labels) != len(cfg.runs):
        raise ValueError(f"got {len(cfg.labels)} labels for {len(cfg.runs)} runs")
    labels = cfg.labels or [Path(r).name if Path(r).is_dir() else Path(r).parent.name for r in cfg.runs]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"runs": []}
    for label, run in zip(labels, cfg.runs):
        e = read_endings(run)
        L = len(parse_task(e["task"]))
        h = hazards(e["progress_hist"], L)
        n = int(np.sum(e["progress_hist"]))
        success = (e["progress_hist"][L] if len(e["progress_hist"]) > L else 0) / n
        res["runs"].append({"label": label, **e, "episodes": n, "success": success, "hazard": h.tolist()})
        print(f"[endings] {label}: success {success:.3f} on {n} episodes of {e['task']}; hazard "
              + " ".join(f"{x:.2f}" for x in h))
    write_json(out / "endings.json", res)
    plot_hazards({r["label"]: r["hazard"] for r in res["runs"]}, out / "endings.png")
    return res
