"""Pretraining sweep (paper Fig. A2): how one pretraining hyperparameter moves controllability.

For each value of one numeric pretraining field (``weight_decay``, ``obs_weight`` = λ, ``steps``, ``lr``, or
a model field such as ``model.depth``) and each seed: pretrain a base model, probe it (App. C.2) and train
its ground-truth controllers (App. C.3). Collects held-out action NLL, probe accuracy per layer, the
teacher-forced within-pair NLL after unseen transitions, and post-/pretraining-task success per control
layer. Finished points are reused and unfinished pretraining resumes, so the sweep can be stopped and
restarted. Writes sweep_pretrain.json and sweep_pretrain.png.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from internal_rl.analysis.progress_nll import pair_choice_nll_max
from internal_rl.phases.common import run_cached, write_json
from internal_rl.phases.controllers import ControllersConfig, run_controllers
from internal_rl.phases.pretrain import PretrainConfig, run_pretrain
from internal_rl.phases.probe import ProbeConfig, run_probe


@dataclass
class SweepPretrainConfig:
    """One pretraining field swept over values and seeds; each point is pretrain → probe → controllers."""

    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    controllers: ControllersConfig = field(default_factory=ControllersConfig)
    param: str = "weight_decay"
    """Numeric field of the pretrain config to sweep; ``model.<field>`` for the architecture (e.g. model.depth)."""
    values: list[float] = field(default_factory=lambda: [0.03, 0.5, 1.5, 3.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    out: str = "runs/demo/sweep_pretrain"
    threads: int = 0
    """torch intra-op threads for every phase of every point (0 = each phase's own setting)."""


def _field_type(cfg: object, name: str) -> type:
    """The declared type of dataclass field `name` of `cfg` (clear error when absent or not numeric)."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if name not in fields:
        raise ValueError(f"{type(cfg).__name__} has no field {name!r}; numeric fields: "
                         f"{sorted(k for k, f in fields.items() if f.type in ('int', 'float', int, float))}")
    t = fields[name].type
    t = {"int": int, "float": float}.get(t, t) if isinstance(t, str) else t
    if t not in (int, float):
        raise ValueError(f"{type(cfg).__name__}.{name} is not numeric ({t}); only int and float fields can be swept")
    return t


def with_value(cfg: PretrainConfig, param: str, value: float) -> PretrainConfig:
    """A copy of `cfg` with `param` (``name`` or ``model.name``) set to `value`, cast to the field's type."""
    in_model = param.startswith("model.")
    name = param.removeprefix("model.")
    t = _field_type(cfg.model if in_model else cfg, name)
    if t is int and value != int(value):
        raise ValueError(f"{param} is an integer field, got {value}")
    if in_model:
        return replace(cfg, model=replace(cfg.model, **{name: t(value)}))
    return replace(cfg, **{name: t(value)})


def run_point(cfg: SweepPretrainConfig, value: float, seed: int) -> dict:
    """Pretrain (or resume / reuse), probe and train ground-truth controllers for one (value, seed)."""
    d = Path(cfg.out) / f"{cfg.param}{value:g}_seed{seed}"
    pcfg = replace(with_value(cfg.pretrain, cfg.param, value), out=str(d / "pretrain"), seed=seed)
    probe_cfg, ctrl_cfg = cfg.probe, cfg.controllers
    if cfg.threads:
        pcfg, probe_cfg, ctrl_cfg = (replace(c, threads=cfg.threads) for c in (pcfg, probe_cfg, ctrl_cfg))
    results = d / "pretrain" / "results.json"
    pre = json.loads(results.read_text()) if results.exists() else None
    trained = pre is None or pre.get("steps") != pcfg.steps
    if trained:
        pre = run_pretrain(replace(pcfg, resume=(d / "pretrain" / "train_state.pt").exists()))
        # probes and controllers of an earlier (shorter) model are stale once pretraining has continued
        for stale in (d / "probe" / "probes.json", d / "controllers" / "controllers.json"):
            stale.unlink(missing_ok=True)
    probe = run_cached(d / "probe" / "probes.json", run_probe,
                       replace(probe_cfg, model=str(d / "pretrain"), data=pcfg.data, out=str(d / "probe"), seed=seed))
    ctrl = run_cached(d / "controllers" / "controllers.json", run_controllers,
                      replace(ctrl_cfg, model=str(d / "pretrain"), data=pcfg.data, out=str(d / "controllers"), seed=seed))
    return {"value": value, "seed": seed, "heldout_action_nll": pre["heldout_action_nll"],
            "probe_accuracy": probe["test_accuracy"], "post_task_within_pair_nll": probe["post_task_within_pair_nll"],
            # from the rows, so that probes.json files written before the field existed still count
            "post_task_pair_choice_nll_max": pair_choice_nll_max(probe["post_task_nll_by_colours_visited"]),
            "layers": ctrl["layers"], "post_task_success": ctrl["post_task_success"],
            "pretrain_task_success": ctrl["pretrain_task_success"], "best_post_task_success": ctrl["best_post_task_success"],
            "best_layer": ctrl["best_layer"]}


def summarise(points: list[dict]) -> list[dict]:
    """Per value: medians over seeds of the best-layer post-task success and of the scalar figures."""
    rows = []
    for value in sorted({p["value"] for p in points}):
        ps = [p for p in points if p["value"] == value]
        med = lambda k: statistics.median(p[k] for p in ps)  # noqa: E731
        rows.append({"value": value, "seeds": len(ps), "best_post_task_success_median": med("best_post_task_success"),
                     "best_post_task_success_min_max": [min(p["best_post_task_success"] for p in ps),
                                                        max(p["best_post_task_success"] for p in ps)],
                     "heldout_action_nll_median": med("heldout_action_nll"),
                     "post_task_within_pair_nll_median": med("post_task_within_pair_nll"),
                     "post_task_pair_choice_nll_max_median": med("post_task_pair_choice_nll_max"),
                     "max_probe_accuracy_median": statistics.median(max(p["probe_accuracy"]) for p in ps)})
    return rows


def run_sweep_pretrain(cfg: SweepPretrainConfig) -> dict:
    """Run every (value, seed) point (reusing finished ones) and write the table and plot."""
    if not cfg.values or not cfg.seeds:
        raise ValueError("sweep-pretrain needs at least one value and one seed")
    for v in cfg.values:  # fail before hours of training, not after
        with_value(cfg.pretrain, cfg.param, v)
    points = [run_point(cfg, v, s) for v in cfg.values for s in cfg.seeds]
    res = {"param": cfg.param, "points": points, "summary": summarise(points)}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep_pretrain.json", res)
    from internal_rl.analysis.plots import plot_sweep_pretrain

    plot_sweep_pretrain(res, out / "sweep_pretrain.png")
    for r in res["summary"]:
        print(f"{cfg.param} = {r['value']:g}: post-task success (best layer, median of {r['seeds']}) "
              f"{r['best_post_task_success_median']:.3f}, held-out NLL {r['heldout_action_nll_median']:.3f}, "
              f"within-pair NLL after unseen transitions {r['post_task_within_pair_nll_median']:.3f}")
    return res
