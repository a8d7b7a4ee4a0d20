"""Rate–distortion sweep over α (paper Fig. 7): for each KL weight, train a metacontroller on a frozen
base and one co-trained with a base from scratch, and record rate (KL per step), distortion (action NLL
per step), switches per episode and switch F1 on held-out D*. The frozen base keeps subgoal-aligned
switching over a wide range of α; co-training loses it. Writes sweep.json and sweep.png.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from internal_rl.phases.common import run_cached, write_json
from internal_rl.phases.discover import DiscoverConfig, run_discover


@dataclass
class SweepAlphaConfig:
    """α grid of paper Table A9; each point is a full discover run (see `discover` for the other fields)."""

    discover: DiscoverConfig = field(default_factory=DiscoverConfig)
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.17, 0.3, 0.5, 1.0])
    modes: list[str] = field(default_factory=lambda: ["frozen", "cotrained"])
    """'frozen' (pretrained base, frozen) and/or 'cotrained' (base from scratch, trained jointly)."""
    out: str = "runs/demo/sweep_alpha"


def run_sweep_alpha(cfg: SweepAlphaConfig) -> dict:
    """Run every (mode, α) discover job (finished ones are reused) and collect the curve."""
    bad = [m for m in cfg.modes if m not in ("frozen", "cotrained")]
    if bad:
        raise ValueError(f"unknown modes {bad}: expected 'frozen' and/or 'cotrained'")
    out = Path(cfg.out)
    res: dict = {"alphas": cfg.alphas}
    for mode in cfg.modes:
        rows = []
        for alpha in cfg.alphas:
            run_dir = out / f"{mode}_alpha{alpha:g}"
            seg = run_cached(run_dir / "segmentation.json", run_discover,
                             replace(cfg.discover, alpha=alpha, cotrain=mode == "cotrained", out=str(run_dir)))
            rows.append({"alpha": alpha, "kl": seg["heldout_kl"], "nll": seg["heldout_nll"], "f1": seg["f1"],
                         "switches_per_episode": seg["switches_per_episode"],
                         "subgoals_per_episode": seg["subgoals_per_episode"]})
        res[mode] = rows
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", res)
    from internal_rl.analysis.plots import plot_rate_distortion

    plot_rate_distortion(res, out / "sweep.png")
    return res
