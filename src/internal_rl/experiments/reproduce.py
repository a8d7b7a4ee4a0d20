"""One command for the paper's headline experiment: data → pretrain → probe → controllers → discover →
internal RL and every baseline, over seeds, summarised as medians and interquartile ranges.

    internal-rl reproduce --preset quick --seeds 5 --out runs/reproduce

Layout: OUT/seed{k}/{data,pretrain,probe,controllers,discover,discover_beta1,discover_cotrained,rl_<method>}
and OUT/results.json, OUT/results.md, OUT/success_curves.png. A finished phase (its result file exists)
is not rerun, and a training phase that was interrupted (pretrain, discover, rl) continues from its last
checkpoint, so an interrupted reproduction resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from internal_rl.experiments import presets
from internal_rl.experiments.overrides import apply_overrides, parse_overrides
from internal_rl.phases.common import run_cached, write_json

METHODS = ("internal", "raw", "beta1", "cotrained")


@dataclass
class ReproduceConfig:
    """The whole pipeline over seeds at one preset."""

    preset: str = "quick"
    seeds: int = 5
    out: str = "runs/reproduce"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    threads: int = 0
    device: str = "auto"
    """Where every phase trains: 'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'."""
    progress: bool = True
    """Progress bars of the phases (--no-progress for logs without them)."""
    overrides: list[str] = field(default_factory=list)
    """PHASE.FIELD=VALUE changes to the preset's phase configs, applied for every seed and method: e.g.
    rl.group_size=16 (GRPO groups), rl.episodes=524288, pretrain.model.attn_window=24, discover.alpha=0.1.
    Phases: data, pretrain, probe, controllers, discover, rl. Recorded in OUT/reproduce.json; a folder made
    with other settings is refused, so cached phases are never mixed across settings."""


def run_seed(preset: str, root: Path, seed: int, methods: list[str], threads: int = 0, device: str = "auto",
             overrides: list[str] | None = None, progress: bool = True) -> dict:
    """Every phase for one seed; returns the per-method RL results and the analysis summaries."""
    from internal_rl.phases.controllers import run_controllers
    from internal_rl.phases.data import run_data
    from internal_rl.phases.discover import run_discover
    from internal_rl.phases.pretrain import run_pretrain
    from internal_rl.phases.probe import run_probe
    from internal_rl.phases.rl import run_rl

    over = parse_overrides(overrides or [])
    read_back: list[str] = []

    def cached(path: Path, run, cfg) -> dict:
        """run_cached, noting the phases whose results an earlier invocation wrote."""
        if path.exists():
            read_back.append(str(path.parent.relative_to(root)))
        return run_cached(path, run, cfg)

    def configured(phase: str, cfg):
        """A phase's config after --no-progress and the overrides (reproduce's own settings come first)."""
        if not progress and hasattr(cfg, "progress"):
            cfg.progress = False
        return apply_overrides(phase, cfg, over)

    data, model = root / "data", root / "pretrain"
    dcfg = presets.data_config(preset, str(data))
    dcfg.seed = seed
    cached(data / "data_stats.json", run_data, configured("data", dcfg))
    pcfg = presets.pretrain_config(preset, str(data), str(model))
    pcfg.seed, pcfg.threads, pcfg.device = seed, threads, device
    pre = cached(model / "results.json", run_pretrain, configured("pretrain", pcfg))
    prcfg = presets.probe_config(preset, str(model), str(data), str(root / "probe"))
    prcfg.device = device
    probe = cached(root / "probe" / "probes.json", run_probe, configured("probe", prcfg))
    ccfg = presets.controllers_config(preset, str(model), str(data), str(root / "controllers"))
    ccfg.seed, ccfg.device = seed, device
    ccfg = configured("controllers", ccfg)
    ccfg.layers = ccfg.layers or presets.reproduce_controller_layers(preset, json.loads(
        (model / "config.json").read_text())["model"])
    ctrl = cached(root / "controllers" / "controllers.json", run_controllers, ccfg)
    discover_dirs = {"internal": "discover", "raw": None, "beta1": "discover_beta1", "cotrained": "discover_cotrained"}
    extra = {"internal": {}, "beta1": {"always_switch": True}, "cotrained": {"cotrain": True}}
    seg = {}
    for method in methods:
        name = discover_dirs[method]
        if name is not None:
            dis = presets.discover_config(preset, str(model), str(data), str(root / name), seed=seed, **extra[method])
            dis.device = device
            seg[method] = cached(root / name / "segmentation.json", run_discover,
                                     configured("discover", dis))
    rl = {}
    for method in methods:
        rcfg = presets.rl_config(preset, str(model), str(root / (discover_dirs[method] or "discover")),
                                 str(root / f"rl_{method}"), method)
        rcfg.seed, rcfg.device = seed, device
        rl[method] = cached(root / f"rl_{method}" / "results.json", run_rl, configured("rl", rcfg))
    return {"pretrain": pre, "probe": probe, "controllers": ctrl, "segmentation": seg, "rl": rl, "read_back": read_back}


def _iqr(x: list[float]) -> list[float]:
    return [float(np.percentile(x, 25)), float(np.percentile(x, 75))]


def summarise(per_seed: list[dict], methods: list[str], preset: str, wall: float) -> dict:
    """Medians and IQRs over seeds for every method and the analysis figures."""
    res: dict = {"preset": preset, "wall_seconds": wall, "seeds": len(per_seed), "methods": {},
                 # wall_seconds is this invocation's: phases finished by an earlier one are read back, not timed
                 "phases_read_back": sum(len(s.get("read_back", [])) for s in per_seed)}
    for m in methods:
        finals = [s["rl"][m]["final_success"] for s in per_seed]
        res["methods"][m] = {
            "final_success_median": float(np.median(finals)),
            "final_success_iqr": _iqr(finals),
            "final_success_per_seed": finals,
            "seeds": len(finals),
            "episodes": int(np.median([s["rl"][m]["episodes"] for s in per_seed])),
            "env_steps": int(np.median([s["rl"][m]["env_steps"] for s in per_seed])),
        }
        means = [s["rl"][m].get("final_success_mean_z") for s in per_seed]
        if all(x is not None for x in means):  # z-space methods: the policy acting with its mean z
            res["methods"][m]["final_success_mean_z_median"] = float(np.median(means))
            res["methods"][m]["final_success_mean_z_per_seed"] = means
    nll = [s["pretrain"]["heldout_action_nll"] for s in per_seed]
    res["pretrain_heldout_action_nll_median"] = float(np.median(nll))
    res["expert_entropy_nats"] = per_seed[0]["pretrain"].get("expert_entropy_nats")
    probes = np.array([s["probe"]["test_accuracy"] for s in per_seed])
    res["probe_test_accuracy_median_by_layer"] = np.median(probes, 0).tolist()
    res["controllers_best_post_task_success"] = [s["controllers"]["best_post_task_success"] for s in per_seed]
    for m in methods:
        if m in per_seed[0]["segmentation"]:
            f1 = [s["segmentation"][m]["f1"] for s in per_seed]
            res.setdefault("segmentation_f1", {})[m] = {"median": float(np.median(f1)), "per_seed": f1}
    # seed by seed: did discovery land on the boundaries (or on the pairs' first colours), and what RL made of it
    res["per_seed"] = []
    for k, s in enumerate(per_seed):
        seg = s["segmentation"].get("internal", {})
        res["per_seed"].append({"seed": k, "switch_f1": seg.get("f1"),
                                "switches_at_boundaries": seg.get("switches_at_boundaries"),
                                "switches_at_mid_events": seg.get("switches_at_mid_events"),
                                "final_success": {m: s["rl"][m]["final_success"] for m in methods}})
    return res


def markdown_table(res: dict) -> str:
    changed = f" with {', '.join(f'`{o}`' for o in res['overrides'])}" if res.get("overrides") else ""
    earlier = (f" ({res['phases_read_back']} phases finished by an earlier invocation were read back, not timed)"
               if res.get("phases_read_back") else "")
    lines = [f"Preset `{res['preset']}`{changed}, {res['seeds']} seeds, {res['wall_seconds'] / 60:.1f} min wall"
             f"{earlier}.", "",
             "| method | final success (median) | IQR (25–75%) | with the mean z (median) | episodes | env steps |",
             "|---|---|---|---|---|---|"]
    for m, r in res["methods"].items():
        lo, hi = r["final_success_iqr"]
        mz = r.get("final_success_mean_z_median")
        lines.append(f"| {m} | {r['final_success_median']:.3f} | {lo:.3f}–{hi:.3f} | "
                     f"{'—' if mz is None else f'{mz:.3f}'} | {r['episodes']} | {r['env_steps']} |")
    rows = res.get("per_seed", [])
    if rows:
        def fmt(x: float | None) -> str:
            return "—" if x is None else f"{x:.2f}"

        methods = list(rows[0]["final_success"])
        lines += ["", "Per seed: the internal method's discovery run (switch F1 against the subgoal boundaries; share of "
                  "switches at the boundaries / at the pairs' first colours, a segmentation shifted by half a "
                  "subgoal) and every method's final success.", "",
                  "| seed | switch F1 | switches at boundaries / first colours | " + " | ".join(methods) + " |",
                  "|---|---|---|" + "---|" * len(methods)]
        for r in rows:
            lines.append(f"| {r['seed']} | {fmt(r['switch_f1'])} | {fmt(r['switches_at_boundaries'])} / "
                         f"{fmt(r['switches_at_mid_events'])} | "
                         + " | ".join(f"{r['final_success'][m]:.3f}" for m in methods) + " |")
    return "\n".join(lines) + "\n"


def check_overrides(preset: str, overrides: list[str], methods: tuple[str, ...] | list[str] = METHODS) -> None:
    """Apply `overrides` to every phase config of `preset` once (and run the RL config's checks for every
    method), so that a bad one fails before anything runs."""
    over = parse_overrides(overrides)
    for phase, cfg in (("data", presets.data_config(preset, "")), ("pretrain", presets.pretrain_config(preset, "", "")),
                       ("probe", presets.probe_config(preset, "", "", "")),
                       ("controllers", presets.controllers_config(preset, "", "", "")),
                       ("discover", presets.discover_config(preset, "", "", ""))):
        apply_overrides(phase, cfg, over)
    for method in methods:
        apply_overrides("rl", presets.rl_config(preset, "", "", "", method), over).check()


def _claim_folder(out: Path, preset: str, overrides: list[str]) -> None:
    """Record the settings in OUT/reproduce.json; refuse a folder whose cached phases were made with others."""
    settings = {"preset": preset, "overrides": list(overrides)}
    path = out / "reproduce.json"
    if path.exists():
        before = json.loads(path.read_text())
        if before != settings:
            raise ValueError(f"{out} holds a reproduction with {before}, not {settings}; its finished phases would "
                             "be reused: choose another --out")
    else:
        write_json(path, settings)


def run_reproduce(cfg: ReproduceConfig) -> dict:
    """The whole pipeline over `cfg.seeds` seeds; writes results.json, results.md and success curves."""
    presets.check_preset(cfg.preset)
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {cfg.seeds}")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; choose from {METHODS}")
    check_overrides(cfg.preset, cfg.overrides, cfg.methods)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _claim_folder(out, cfg.preset, cfg.overrides)
    t0 = time.time()
    per_seed = []
    for seed in range(cfg.seeds):
        print(f"=== seed {seed} ===")
        per_seed.append(run_seed(cfg.preset, out / f"seed{seed}", seed, cfg.methods, cfg.threads, cfg.device,
                                 cfg.overrides, cfg.progress))
    res = summarise(per_seed, cfg.methods, cfg.preset, time.time() - t0)
    res["overrides"] = list(cfg.overrides)
    write_json(out / "results.json", res)
    (out / "results.md").write_text(markdown_table(res))
    from internal_rl.analysis.plots import plot_success_curves

    plot_success_curves({m: [s["rl"][m]["curve"] for s in per_seed] for m in cfg.methods}, out / "success_curves.png")
    print(markdown_table(res))
    print(f"results written under {out.resolve()}")
    return res
