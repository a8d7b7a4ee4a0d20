"""Discovery: train the metacontroller self-supervised on D* with the base model frozen (paper Eq. 3).

    min_φ  Σ_t [ −log p_{θ,φ}(a_t | o_1..t, z_1..t) + α · KL(N(μ_t, Σ_t) ‖ N(0, I)) ]

The frozen lower blocks run without a graph; the metacontroller rewrites e at the control layer; the
frozen upper blocks run with a graph only through the activations (their parameters get no grad).
With `cotrain` the base model is instead trained from scratch together with the metacontroller (the
paper's co-training ablation, which loses the subgoal-aligned switching). Writes a run folder with
metacontroller.safetensors, segmentation.json (switch F1 vs ground-truth subgoal boundaries on
held-out D*) and a β-over-time plot like the paper's Fig. A3.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from internal_rl.analysis.segmentation import (
    beta_histogram,
    segmentation_by_threshold,
    segmentation_metrics,
    switch_sites,
)
from internal_rl.control.discovery import discovery_step
from internal_rl.control.metacontroller import MetaController, MetaControllerConfig
from internal_rl.data.trajectories import Trajectories
from internal_rl.envs.pinpad import ENV_ID as PINPAD_ENV_ID
from internal_rl.envs.pinpad import PinPadConfig, colour_entries
from internal_rl.models.sequence_model import SequenceModel, SequenceModelConfig, freeze
from internal_rl.phases.common import (
    RESUME_FREE,
    MetricsLogger,
    check_resume,
    load_train_state,
    report_budget_reached,
    resolve_device,
    save_train_state,
    set_seed,
    set_threads,
    to_jsonable,
    write_json,
)


@dataclass
class DiscoverConfig:
    """Metacontroller discovery (paper Table A9: α grid {0,…,1}, 64k steps, batch 512, lr 1e-3, wd 0.03)."""

    model: str = "runs/demo/pretrain"
    """Pretrained base model folder (with `cotrain`, only its architecture is used)."""
    data: str = "runs/demo/data"
    """Data folder holding D_star/ and D_star_heldout/."""
    out: str = "runs/demo/discover"
    alpha: float = 0.1
    """KL weight α."""
    kl_warmup: int = 0
    """Raise α linearly from 0 over this many steps after the switch warm-up (0: constant α, as in the
    paper). Keeps the KL from collapsing the posterior onto the prior before the decoder uses z."""
    switch_weight: float = 0.0
    """Weight of an optional switch-rate penalty, mean β over valid steps t ≥ 2 (0: the paper's
    objective, which has none; the seed API's `switch_loss` is the same term)."""
    switch_warmup: int = 0
    """Hold β ≡ 1 for this many first steps (0: the paper's recipe), so encoder and decoder learn
    informative codes before the switching unit can settle on "never switch" (see docs/RESULTS.md)."""
    n_z: int = 8
    rank: int = 16
    full_rank: bool = False
    switch: str = "soft"
    """'soft' (paper), 'hard' (straight-through) or 'gumbel'."""
    gumbel_tau: float = 1.0
    always_switch: bool = False
    """β ≡ 1 ablation."""
    oracle_switch: bool = False
    """Analysis, not discovery: impose β = 1 exactly at the ground-truth subgoal boundaries (and t = 1),
    β = 0 elsewhere, and learn only the codes. Its (NLL, KL) prices the paper's segmentation under the
    same objective, to compare with what the switching unit finds (docs/RESULTS.md)."""
    decoder_init_scale: float = 1e-2
    """Size of U e relative to e at initialisation."""
    init_logvar: float = 0.0
    """Initial log σ² of the proposal z̃ (see MetaControllerConfig.init_logvar)."""
    embedder_dim: int = 64
    """Width of the non-causal sequence embedder's Hawk (paper: not stated); e is projected to it first."""
    layer: int = -1
    """Control layer (−1: the model config's control_layer, L/2 unless the preset says otherwise)."""
    cotrain: bool = False
    """Train the base model from scratch together with the metacontroller (ablation)."""
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.03
    base_lr: float = 1e-3
    """Learning rate of the base model when cotraining."""
    log_every: int = 50
    ckpt_every: int = 500
    eval_episodes: int = 250
    eval_every: int = 0
    """Every this many steps, score the held-out episodes as at the end (switch F1, precision, recall, the
    objective; on gridworld-pinpad where the switches land) into metrics.csv as `heldout_*` columns, so the
    segmentation can be followed over training (0: only at the end)."""
    seed: int = 0
    restarts: int = 1
    """Train this many runs (seeds seed, seed+1, …, in OUT/restart{i}) and keep the one with the lowest
    held-out objective, NLL + α·KL (no labels), copied into OUT. Discovery's seed decides as much as the
    base on the quick recipe (docs/RESULTS.md, Sessions 25–26); the objective ranks the runs on the
    subgoal boundaries first. A finished restart with the same settings is read back, not retrained."""
    threads: int = 0
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'."""
    resume: bool = False
    progress: bool = True

    def metacontroller_config(self, d_model: int) -> MetaControllerConfig:
        return MetaControllerConfig(d_model=d_model, n_z=self.n_z, rank=self.rank, full_rank=self.full_rank,
                                    switch=self.switch, gumbel_tau=self.gumbel_tau, always_switch=self.always_switch,
                                    embedder_dim=self.embedder_dim, decoder_init_scale=self.decoder_init_scale,
                                    init_logvar=self.init_logvar)


def save_metacontroller(mc: MetaController, folder: str | Path, layer: int) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "metacontroller.json", {"metacontroller": mc.config, "layer": layer})
    save_file({k: v.detach().cpu().contiguous() for k, v in mc.state_dict().items()}, folder / "metacontroller.safetensors")


def load_metacontroller(folder: str | Path) -> tuple[MetaController, int]:
    """Load (metacontroller, control layer) from a discover run folder."""
    folder = Path(folder)
    path = folder / "metacontroller.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {folder} a discover run folder?")
    meta = json.loads(path.read_text())
    mc = MetaController(MetaControllerConfig(**meta["metacontroller"]))
    mc.load_state_dict(load_file(folder / "metacontroller.safetensors"))
    return mc, int(meta["layer"])


def load_base(discover_folder: str | Path, fallback_model: str | Path) -> SequenceModel:
    """The base model a metacontroller was trained with: its own co-trained base if any, else the pretrained one."""
    own = Path(discover_folder) / "base"
    return SequenceModel.from_pretrained(own if (own / "model.safetensors").exists() else fallback_model)


def kl_weight(cfg: DiscoverConfig, step: int) -> float:
    """α at `step`: 0 during the switch warm-up (if any KL warm-up), then a linear ramp to cfg.alpha."""
    if cfg.kl_warmup <= 0:
        return cfg.alpha
    return cfg.alpha * min(1.0, max(0.0, step - cfg.switch_warmup) / cfg.kl_warmup)


@torch.no_grad()
def evaluate_segmentation(model: SequenceModel, mc: MetaController, data: Trajectories, layer: int,
                          episodes: int, alpha: float, oracle_switch: bool = False) -> tuple[dict, dict]:
    """Switch F1 etc. on held-out episodes (deterministic z̃ = μ), plus arrays for plotting."""
    b = data.batch(np.arange(min(episodes, len(data))), next(model.parameters()).device)
    losses, out = discovery_step(model, mc, b, layer, alpha, sample=False, oracle_switch=oracle_switch)
    beta, subgoals, mask = out.beta.cpu().numpy(), b["subgoals"].cpu().numpy(), b["mask"].cpu().numpy()
    res = segmentation_metrics(beta, subgoals, mask)
    res["by_threshold"] = segmentation_by_threshold(beta, subgoals, mask)
    res["beta_histogram"] = beta_histogram(beta, mask, bins=20)  # label-free: where β's two modes part
    if data.meta.get("env") == PINPAD_ENV_ID:  # missed switches: noise, or the phase-shifted segmentation?
        pinpad = PinPadConfig(**data.meta.get("config", {}))
        events = colour_entries(b["obs"][:, : mask.shape[1]].cpu().numpy(), pinpad)
        res.update(switch_sites(beta, subgoals, mask, events))
    # label-free: the objective itself on held-out episodes (NLL + α·KL per step, z̃ = μ), to compare runs by
    res.update(heldout_nll=losses["nll"].item(), heldout_kl=losses["kl"].item(), heldout_objective=losses["loss"].item())
    return res, {"beta": beta, "subgoals": subgoals, "mask": mask}


HELDOUT_COLUMNS = ("f1", "precision", "recall", "switches_per_episode", "switches_at_mid_events", "heldout_objective",
                   "heldout_nll", "heldout_kl")


def heldout_columns(seg: dict) -> dict[str, float]:
    """The scores of `evaluate_segmentation` that `--eval-every` logs, named heldout_* in metrics.csv."""
    return {(k if k.startswith("heldout_") else f"heldout_{k}"): float(seg[k]) for k in HELDOUT_COLUMNS if k in seg}


def run_discover(cfg: DiscoverConfig) -> dict:
    """Train (or resume) a metacontroller; write segmentation.json and the β plot."""
    if cfg.steps < 0 or cfg.eval_every < 0 or cfg.batch_size < 1 or cfg.eval_episodes < 1 or cfg.restarts < 1:
        raise ValueError(f"steps and eval_every must be >= 0, batch_size, eval_episodes and restarts >= 1, got "
                         f"{cfg.steps}, {cfg.eval_every}, {cfg.batch_size}, {cfg.eval_episodes}, {cfg.restarts}")
    if cfg.restarts > 1:
        return run_discover_restarts(cfg)
    set_threads(cfg.threads)
    rng = set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(cfg.data)
    train = Trajectories.load(data / "D_star")
    heldout = Trajectories.load(data / "D_star_heldout")

    if cfg.resume:
        check_resume(out, "discover", cfg, RESUME_FREE | {"steps", "model"})
    if cfg.cotrain:
        arch = json.loads((Path(cfg.model) / "config.json").read_text())["model"]
        model = SequenceModel(SequenceModelConfig(**arch)) if not cfg.resume else SequenceModel.from_pretrained(out / "base")
        model.train()
    else:
        model = freeze(SequenceModel.from_pretrained(cfg.model))
    layer = model.config.control_layer if cfg.layer == -1 else cfg.layer
    model.config.check_layer(layer, "--layer")
    if cfg.resume:
        mc, layer = load_metacontroller(out)
    else:
        mc = MetaController(cfg.metacontroller_config(model.config.d_model))
    model.to(device)
    mc.to(device)
    groups = [{"params": mc.parameters(), "lr": cfg.lr}]
    if cfg.cotrain:
        groups.append({"params": model.parameters(), "lr": cfg.base_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    step = 0
    if cfg.resume:
        state = load_train_state(out, opt)
        step, rng = state["step"], state["extra"].get("rng", rng)
        if step >= cfg.steps:
            report_budget_reached("discover", out, f"step {step}", "--steps", cfg.steps)
    write_json(out / "config.json", {"discover": cfg, "layer": layer})
    before = None if cfg.cotrain else {k: v.clone() for k, v in model.state_dict().items()}

    def checkpoint():
        save_metacontroller(mc, out, layer)
        if cfg.cotrain:
            model.save_pretrained(out / "base")
        save_train_state(out, step, opt, extra={"rng": rng})

    logger = MetricsLogger(out, resume_step=step if cfg.resume else None)
    bar = tqdm(total=cfg.steps, initial=step, desc="discover", disable=not cfg.progress, dynamic_ncols=True)
    t0, first_step = time.time(), step  # the rate counts this process's steps, not those before a resume
    while step < cfg.steps:
        batch = train.batch(rng.integers(0, len(train), cfg.batch_size), device)
        alpha = kl_weight(cfg, step)
        losses, mo = discovery_step(model, mc, batch, layer, alpha, frozen=not cfg.cotrain,
                                    force_switch=step < cfg.switch_warmup,
                                    switch_weight=0.0 if step < cfg.switch_warmup else cfg.switch_weight,
                                    oracle_switch=cfg.oracle_switch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(nll=f"{losses['nll'].item():.3f}", kl=f"{losses['kl'].item():.2f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            m = batch["mask"]
            sw = ((mo.beta > 0.5) & m).float().sum(1).mean().item()
            logger.log(step, nll=losses["nll"].item(), kl=losses["kl"].item(), alpha=alpha, switches_per_episode=sw,
                       steps_per_s=(step - first_step) / max(time.time() - t0, 1e-9))
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            checkpoint()
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:  # the last step is scored below
            seg, _ = evaluate_segmentation(model, mc, heldout, layer, cfg.eval_episodes, cfg.alpha, cfg.oracle_switch)
            logger.log(step, **heldout_columns(seg))
    bar.close()
    if not (out / "metacontroller.safetensors").exists():
        checkpoint()
    if before is not None:  # frozen means frozen: the base is bit-identical
        after = model.state_dict()
        if not all(torch.equal(before[k], after[k]) for k in before):
            raise RuntimeError("the frozen base model changed during discovery")
    seg, arrays = evaluate_segmentation(model, mc, heldout, layer, cfg.eval_episodes, cfg.alpha, cfg.oracle_switch)
    seg.update(alpha=cfg.alpha, cotrain=cfg.cotrain, always_switch=cfg.always_switch, oracle_switch=cfg.oracle_switch,
               layer=layer, steps=step)
    write_json(out / "segmentation.json", seg)
    if cfg.eval_every:
        logger.log(step, **heldout_columns(seg))
    from internal_rl.analysis.plots import plot_switching

    plot_switching(arrays, out / "switching.png")
    logger.close()
    print(f"[discover] held-out switch F1 {seg['f1']:.3f} (precision {seg['precision']:.3f}, recall {seg['recall']:.3f}); "
          f"switches/episode {seg['switches_per_episode']:.2f} vs subgoals/episode {seg['subgoals_per_episode']:.2f}; "
          "F1 at β thresholds " + ", ".join(f"{r['threshold']:g}: {r['f1']:.3f}" for r in seg["by_threshold"])
          + (f"; switches at boundaries {seg['switches_at_boundaries']:.2f}, at the pairs' first colours "
             f"{seg['switches_at_mid_events']:.2f}, elsewhere {seg['switches_elsewhere']:.2f}"
             if "switches_at_mid_events" in seg else "")
          + f"; held-out objective {seg['heldout_objective']:.4f} (NLL + α·KL, no labels: among runs of one base and α, "
          "lower is the one to keep; examples/rank_discovery_runs.py)")
    hint = shifted_segmentation_hint(seg)
    if hint:
        print(f"[discover] {hint}")
    return to_jsonable(seg)


def shifted_segmentation_hint(seg: dict) -> str | None:
    """A warning when most held-out switches land at the pairs' first colours (`switch_sites`), else None."""
    share = seg.get("switches_at_mid_events", float("nan"))
    if not share > 0.5:  # also None when the data has no landmarks (nan) or the key is missing
        return None
    return (f"{share:.0%} of switches land where a pair's first colour is entered, not where the pair ends: a "
            "segmentation shifted by half a subgoal, nearly as cheap under the objective (docs/RESULTS.md, "
            "Session 26); other seeds find the boundaries (--restarts K keeps the lowest objective)")


def _finished_restart(sub: DiscoverConfig) -> dict | None:
    """segmentation.json of a restart folder that finished `sub.steps` with sub's settings, else None."""
    folder = Path(sub.out)
    seg_path = folder / "segmentation.json"
    if not seg_path.exists():
        return None
    seg = json.loads(seg_path.read_text())
    try:
        check_resume(folder, "discover", sub, RESUME_FREE)
    except ValueError:
        return None
    return seg if seg.get("steps") == sub.steps and "heldout_objective" in seg else None


def run_discover_restarts(cfg: DiscoverConfig) -> dict:
    """`cfg.restarts` discovery runs with consecutive seeds in OUT/restart{i}; the one with the lowest held-out
    objective is copied into OUT (which then reads like one run: metacontroller, segmentation.json, plot), and
    OUT/restarts.json lists every restart's objective and figures. Finished restarts are read back; with
    `resume`, unfinished ones continue from their checkpoints."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(cfg.restarts):
        sub = dataclasses.replace(cfg, out=str(out / f"restart{i}"), seed=cfg.seed + i, restarts=1)
        seg = _finished_restart(sub)
        if seg is None:
            sub.resume = cfg.resume and (Path(sub.out) / "train_state.pt").exists()
            print(f"[discover] restart {i + 1}/{cfg.restarts} (seed {sub.seed}) -> {sub.out}")
            seg = run_discover(sub)
        else:
            print(f"[discover] restart {i + 1}/{cfg.restarts} (seed {sub.seed}) finished earlier: read back")
        row = {"restart": i, "seed": sub.seed, "folder": sub.out, "heldout_objective": seg["heldout_objective"]}
        row.update({k: seg[k] for k in ("heldout_nll", "heldout_kl", "switches_per_episode", "f1") if k in seg})
        rows.append(row)
    kept = min(rows, key=lambda r: r["heldout_objective"])
    for f in Path(kept["folder"]).iterdir():  # the kept run's files, as if OUT had been that run
        if f.is_file() and f.name != "config.json":
            shutil.copy2(f, out / f.name)
        elif f.is_dir() and f.name == "base":  # a co-trained base travels with its metacontroller
            shutil.copytree(f, out / f.name, dirs_exist_ok=True)
    write_json(out / "config.json", {"discover": cfg, "layer": json.loads(
        (Path(kept["folder"]) / "config.json").read_text())["layer"], "kept_restart": kept["restart"]})
    summary = {"kept_restart": kept["restart"], "kept_seed": kept["seed"],
               "rule": "lowest held-out objective, NLL + alpha * KL per step (no labels)", "restarts": rows}
    write_json(out / "restarts.json", summary)
    seg = json.loads((out / "segmentation.json").read_text())
    seg.update(kept_restart=kept["restart"], restarts=cfg.restarts)
    write_json(out / "segmentation.json", seg)
    print(f"[discover] kept restart {kept['restart']} (seed {kept['seed']}): held-out objective "
          + ", ".join(f"{r['heldout_objective']:.4f}" for r in rows) + f" -> {out} (restarts.json)")
    return to_jsonable(seg)
