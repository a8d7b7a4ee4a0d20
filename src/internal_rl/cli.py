"""`internal-rl <phase> [--preset smoke|quick|long|paper] [--field value ...]`: one subcommand per phase.

Each phase's options are generated from its config dataclass (tyro); `--preset` picks the defaults
that the other flags then override. `internal-rl <phase> --help` lists every option.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from internal_rl.experiments import presets

USAGE = """usage: internal-rl <command> [--preset smoke|quick|long|paper] [options]

commands:
  demo         data → pretrain → probe in one folder (--out DIR, --preset)
  data         generate expert datasets D and D* for gridworld-pinpad
  pretrain     train the base sequence model
  probe        linear subgoal probes on every layer
  controllers  ground-truth controllers per layer, evaluated on the post-training task
  discover     train the metacontroller (self-supervised discovery of abstract actions)
  codes        the discovered subgoal codes, chained by the true subgoal (what internal RL's z-space holds)
  endings      where episodes of finished rl / controllers / codes runs end, per task position (--runs DIR ...)
  rescue       on a finished rl run: could another code z at the lost decision have saved its failed layouts?
  curves       training success of rl runs side by side, seeds pooled by label, running runs too (--runs DIR ...)
  reproduce    the whole pipeline over seeds: --preset quick --seeds 5 --out DIR
  sweep-alpha  rate–distortion sweep over the KL weight α, frozen vs co-trained base
  sweep-pretrain  one pretraining field (--param weight_decay --values ...) → probes + GT controllers (Fig. A2)
  rl           RL on the post-training task: --method internal|raw|beta1|cotrained
  babyai       BabyAI (minigrid) bot demos → pretrain → discover → internal RL (GRPO, ES): --preset smoke|quick --out DIR

common options: --preset (default quick), --root DIR (run folders DIR/data, DIR/pretrain, ...)

run `internal-rl <command> --help` for the options of a command.
"""


def _pop_flag(args: list[str], name: str, default: str) -> tuple[str, list[str]]:
    """Remove `--name value` (or `--name=value`) from args; return (value, remaining args)."""
    rest, value, i = [], default, 0
    while i < len(args):
        a = args[i]
        if a == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
            i += 2
            continue
        if a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return value, rest


RESUMABLE = ("pretrain", "discover", "rl")  # phases whose config.json holds their settings under their name


def _phase(cls_default: Callable[[str, str], object], run: Callable, args: list[str], prog: str):
    """Run one phase from its preset's defaults and the flags; with ``--resume`` the defaults are the run
    folder's own saved settings instead (so a bare ``--resume`` continues the run as it was configured)."""
    import tyro

    preset, args = _pop_flag(args, "preset", "quick")
    root, args = _pop_flag(args, "root", "runs/demo")
    default = cls_default(preset, root)
    if prog in RESUMABLE and "--resume" in args:
        import json

        from internal_rl.phases.common import config_from_saved

        out, _ = _pop_flag(list(args), "out", default.out)
        saved_path = Path(out) / "config.json"
        saved = json.loads(saved_path.read_text()).get(prog) if saved_path.exists() else None
        if saved:  # the folder read is the folder written, wherever the run was first saved
            default = config_from_saved(default, {**saved, "out": out})
    cfg = tyro.cli(type(default), default=default, args=args, prog=f"internal-rl {prog}")
    return run(cfg)


def _defaults(cmd: str, preset: str, root: str, method: str = "internal"):
    """Default config of phase `cmd` at `preset`, reading and writing run folders under `root` (`rl` writes
    `root/rl` for internal RL, `root/rl_<method>` for the baselines, as `reproduce` does)."""
    data, model = f"{root}/data", f"{root}/pretrain"
    if cmd == "data":
        return presets.data_config(preset, data)
    if cmd == "pretrain":
        return presets.pretrain_config(preset, data, model)
    if cmd == "probe":
        return presets.probe_config(preset, model, data, f"{root}/probe")
    if cmd == "controllers":
        return presets.controllers_config(preset, model, data, f"{root}/controllers")
    if cmd == "discover":
        return presets.discover_config(preset, model, data, f"{root}/discover")
    if cmd == "codes":
        from internal_rl.phases.codes import CodesConfig

        small = dict(code_episodes=20, eval_episodes=16) if preset == "smoke" else {}
        return CodesConfig(model=model, discover=f"{root}/discover", data=data, out=f"{root}/codes", **small)
    if cmd == "endings":
        from internal_rl.phases.endings import EndingsConfig

        return EndingsConfig(out=f"{root}/endings")
    if cmd == "rescue":
        from internal_rl.phases.rescue import RescueConfig

        small = dict(groups=4, group_size=4) if preset == "smoke" else {}
        return RescueConfig(rl=f"{root}/rl", out=f"{root}/rescue", **small)
    if cmd == "curves":
        from internal_rl.phases.curves import CurvesConfig

        return CurvesConfig(out=f"{root}/curves")
    if cmd == "sweep_alpha":
        from internal_rl.phases.sweep_alpha import SweepAlphaConfig

        return SweepAlphaConfig(discover=presets.discover_config(preset, model, data, ""), out=f"{root}/sweep_alpha")
    if cmd == "sweep_pretrain":
        from internal_rl.phases.sweep_pretrain import SweepPretrainConfig

        return SweepPretrainConfig(pretrain=presets.pretrain_config(preset, data, ""),
                                   probe=presets.probe_config(preset, "", data, ""),
                                   controllers=presets.controllers_config(preset, "", data, ""),
                                   out=f"{root}/sweep_pretrain")
    if cmd == "rl":
        out = f"{root}/rl" if method == "internal" else f"{root}/rl_{method}"
        return presets.rl_config(preset, model, f"{root}/discover", out, method)
    raise KeyError(cmd)


def _runner(cmd: str) -> Callable:
    """The run function of phase `cmd` (imported lazily so `--help` stays fast)."""
    import importlib

    module = importlib.import_module(f"internal_rl.phases.{cmd}")
    return getattr(module, f"run_{cmd}")


PHASES = ("data", "pretrain", "probe", "controllers", "discover", "codes", "endings", "curves", "sweep_alpha",
          "sweep_pretrain", "rl", "rescue")


def demo(args: list[str]) -> dict:
    """data → pretrain → probe at a preset, all under --out (default runs/demo)."""
    from internal_rl.phases.data import run_data
    from internal_rl.phases.pretrain import run_pretrain
    from internal_rl.phases.probe import run_probe

    preset, args = _pop_flag(args, "preset", "quick")
    out, args = _pop_flag(args, "out", "runs/demo")
    threads, args = _pop_flag(args, "threads", "0")
    if args:
        raise ValueError(f"demo takes --preset, --out and --threads, not {' '.join(args)}; use the per-phase "
                         "commands for finer control")
    root = Path(out)
    dcfg = presets.data_config(preset, str(root / "data"))
    if not (root / "data" / "data_stats.json").exists():
        run_data(dcfg)
    pcfg = presets.pretrain_config(preset, str(root / "data"), str(root / "pretrain"))
    pcfg.threads = int(threads)
    res = run_pretrain(pcfg)
    probe = run_probe(presets.probe_config(preset, str(root / "pretrain"), str(root / "data"), str(root / "probe")))
    print(f"\nheld-out action NLL {res['heldout_action_nll']:.3f} nats/step "
          f"(expert entropy floor {res['expert_entropy_nats']:.3f})")
    print("probe accuracy by layer (held-out): " + ", ".join(f"{a:.2f}" for a in probe["test_accuracy"]))
    print("held-out NLL by colours visited so far (odd counts: the target is the pair partner): "
          + ", ".join(f"{r['colours_visited']}: {r['nll']:.3f}" for r in probe["heldout_nll_by_colours_visited"]))
    print(f"within-pair NLL: {probe['heldout_within_pair_nll']:.3f} held-out, "
          f"{probe['post_task_within_pair_nll']:.3f} on the post-training task (after unseen transitions)")
    print(f"worst pair-choice NLL on the post-training task: {probe['post_task_pair_choice_nll_max']:.3f} "
          "(2 or more: the quick bases whose controllers could not steer it; docs/RESULTS.md, Session 16)")
    print(f"results written under {root.resolve()}")
    return {"pretrain": res, "probe": probe}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    cmd, rest = argv[0].replace("-", "_"), argv[1:]
    if cmd == "demo":
        demo(rest)
        return
    if cmd == "reproduce":
        import tyro

        from internal_rl.experiments.reproduce import ReproduceConfig, run_reproduce

        run_reproduce(tyro.cli(ReproduceConfig, args=rest, prog="internal-rl reproduce"))
        return
    if cmd == "babyai":
        import tyro

        from internal_rl.phases.babyai import BabyAIConfig, babyai_preset, run_babyai

        preset, rest = _pop_flag(rest, "preset", "quick")
        root, rest = _pop_flag(rest, "root", "")
        default = babyai_preset(preset, root or None)
        run_babyai(tyro.cli(BabyAIConfig, default=default, args=rest, prog="internal-rl babyai"))
        return
    if cmd in PHASES:
        method, _ = _pop_flag(list(rest), "method", "internal")
        _phase(lambda preset, root: _defaults(cmd, preset, root, method), _runner(cmd), rest, cmd)
    else:
        print(USAGE, file=sys.stderr)
        raise ValueError(f"unknown command {argv[0]!r} (the commands are listed above)")


def entry() -> None:
    """The `internal-rl` console command: `main`, with bad input (ValueError, FileNotFoundError) reported as one
    line and exit status 2 instead of a traceback; INTERNAL_RL_TRACEBACK=1 shows the traceback."""
    import os

    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("INTERNAL_RL_TRACEBACK") == "1":
            raise
        print(f"internal-rl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    entry()
