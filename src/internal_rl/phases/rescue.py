"""Rescue phase: on a finished ``internal-rl rl`` run, how many of the layouts its policy loses could some
other code z have saved at the decision where they were lost (analysis/rescue.py)?

Writes rescue.json. Argmax primitive actions and z = the policy's mean (a deterministic episode per layout),
so this reads what z-space holds for the trained policy's failures, not how the paper's method scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from internal_rl.analysis.rescue import parse_candidates, rescue_failed_layouts
from internal_rl.phases.common import set_threads, write_json
from internal_rl.phases.rl import load_finished_agent


@dataclass
class RescueConfig:
    """Configuration of the rescue analysis."""

    rl: str = "runs/demo/rl"
    """A finished internal-RL run folder (config.json + policy.safetensors) of a z-space method."""
    out: str = "runs/demo/rescue"
    """Output folder: rescue.json."""
    groups: int = 512
    """Fresh layouts of the run's task."""
    group_size: int = 32
    """Rows per layout: row 0 the policy's reference episode, the rest candidates."""
    candidates: list[str] = field(default_factory=lambda: ["prior:1", "policy:1", "policy:2", "policy:4"])
    """What the candidate rows draw at the rescued decision, cycled over rows 1..group_size−1: ``prior:s``
    is z = s·ε, ``policy:s`` is z = mean + s·σ·ε (ε ~ N(0, I))."""
    seed: int = 20_000_000
    """Layouts and candidate draws (a range apart from rl's training and evaluation seeds)."""
    threads: int = 0
    progress: bool = True
    """Progress bars over each pass's primitive steps."""


def run_rescue(cfg: RescueConfig) -> dict:
    """Load the run's frozen base, metacontroller and policy; run the two passes; write rescue.json."""
    set_threads(cfg.threads)
    run = Path(cfg.rl)
    agent, rl_cfg = load_finished_agent(run)
    if rl_cfg.oracle_switch:
        raise ValueError(f"{run}: oracle_switch runs decide at the true subgoal changes; the rescue analysis "
                         "follows the switching unit")
    candidates = parse_candidates(cfg.candidates)
    t0 = time.time()
    res = rescue_failed_layouts(agent.model, agent.mc, agent.layer, agent.net, rl_cfg.task, cfg.groups,
                                cfg.group_size, cfg.seed, candidates, rl_cfg.beta_threshold or None,
                                progress=cfg.progress)
    res.update(rl_run=str(run), seconds=round(time.time() - t0, 1))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "rescue.json", res)
    print(f"reference (argmax actions, z = mean): {res['reference_success']:.3f} success over {cfg.groups} layouts; "
          f"rows of a group agree in {res['groups_consistent']:.3f} of them")
    if res["rescued"] is not None:
        print(f"of {res['failed_layouts']} failed layouts, some candidate at the last decision finishes "
              f"{res['rescued']:.3f} and gets past the failing colour {res['crossed']:.3f}; with those rescued: "
              f"{res['success_with_rescue']:.3f}")
        for label, v in res["by_candidate"].items():
            print(f"  {label:12s} rescued {v['rescued']:.3f}, per row {v['row_success']:.3f}")
    print(f"written to {out / 'rescue.json'}")
    return res
