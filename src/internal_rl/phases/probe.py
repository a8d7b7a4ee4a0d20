"""Probe phase: linear subgoal probes on every layer of a pretrained model → probes.json + probes.png."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from internal_rl.control.probes import probe_layers
from internal_rl.data.trajectories import Trajectories
from internal_rl.models.sequence_model import SequenceModel, freeze
from internal_rl.phases.common import resolve_device, set_seed, set_threads, write_json


@dataclass
class ProbeConfig:
    """Linear probing of the ground-truth subgoal (paper App. C.2)."""

    model: str = "runs/demo/pretrain"
    """Pretrained model folder."""
    data: str = "runs/demo/data"
    """Data folder: probes train on D_star/ and are scored on D_star_heldout/."""
    out: str = "runs/demo/probe"
    n_classes: int = 4
    """Number of subgoals."""
    max_episodes: int = 2000
    steps: int = 500
    post_task_episodes: int = 400
    """Expert post-training-task episodes for the teacher-forced NLL-by-progress diagnostic."""
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'."""


def run_probe(cfg: ProbeConfig) -> dict:
    """Train and score one probe per layer; write probes.json and a plot."""
    set_threads(cfg.threads)
    set_seed(cfg.seed)
    model = freeze(SequenceModel.from_pretrained(cfg.model)).to(resolve_device(cfg.device))
    data = Path(cfg.data)
    res = probe_layers(model, Trajectories.load(data / "D_star"), Trajectories.load(data / "D_star_heldout"),
                       cfg.n_classes, cfg.max_episodes, cfg.steps, cfg.seed)
    res["model"] = cfg.model
    from internal_rl.analysis.progress_nll import (
        nll_by_colours_visited,
        pair_choice_nll_max,
        post_task_nll_by_colours_visited,
        within_pair_mean,
    )

    res["heldout_nll_by_colours_visited"] = nll_by_colours_visited(model, Trajectories.load(data / "D_heldout"))
    res["post_task_nll_by_colours_visited"] = post_task_nll_by_colours_visited(model, cfg.post_task_episodes)
    res["post_task_within_pair_nll"] = within_pair_mean(res["post_task_nll_by_colours_visited"])
    res["heldout_within_pair_nll"] = within_pair_mean(res["heldout_nll_by_colours_visited"])
    res["post_task_pair_choice_nll_max"] = pair_choice_nll_max(res["post_task_nll_by_colours_visited"])
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "probes.json", res)
    from internal_rl.analysis.plots import plot_probes

    plot_probes(res, out / "probes.png")
    print("[probe] held-out subgoal probe accuracy by layer: " + ", ".join(f"{a:.2f}" for a in res["test_accuracy"])
          + f"; probes.json and probes.png -> {out}")
    return res
