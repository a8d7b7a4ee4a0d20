"""What every training phase shares: run folders, metrics logging, checkpoints that resume, seeding.

A run folder holds config.json, model.safetensors (the weights a later phase reads), train_state.pt
(optimizer, step and RNG states, for `--resume`), metrics.csv and TensorBoard event files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def set_seed(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return a numpy Generator for the phase's own sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def set_threads(threads: int) -> None:
    """Use `threads` intra-op threads (0 = leave torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


AMP_MODES = ("none", "bf16", "auto")


def resolve_amp(spec: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of a training loop: 'none' (float32 throughout), 'bf16' (matrix products in bfloat16;
    weights, optimizer state and loss reductions stay float32) or 'auto' (bf16 where the device has bf16
    matrix instructions: CUDA with bf16 support, or a CPU with AVX-512 BF16 or AMX; else none, since
    bf16 emulated on other CPUs is no faster than float32)."""
    if spec not in AMP_MODES:
        raise ValueError(f"unknown amp mode {spec!r}; choose one of {', '.join(AMP_MODES)}")
    if spec == "none":
        return None
    if spec == "auto":
        if device.type == "cuda":
            fast = torch.cuda.is_bf16_supported()
        else:
            cpu_has = lambda name: bool(getattr(torch.cpu, name, lambda: False)())  # noqa: E731 (private probes)
            fast = cpu_has("_is_avx512_bf16_supported") or cpu_has("_is_amx_tile_supported")
        if not fast:
            return None
    return torch.bfloat16


def resolve_device(spec: str) -> torch.device:
    """The torch device a phase runs on: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:N'."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available to this torch "
                         f"({torch.__version__}); use --device cpu or install a CUDA build")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {spec!r}: only cpu and cuda are supported")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that a wall-clock reading is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_cached(path: str | Path, run: Callable[[Any], Any], cfg: Any) -> dict:
    """`run(cfg)` unless its result file `path` already exists, whose contents are returned instead
    (how reproduce and the sweeps resume: finished phases are read back, not retrained). A training
    phase that was interrupted (its folder `cfg.out` holds a train_state.pt but no result file yet)
    continues from that checkpoint, as with `--resume`, instead of starting over."""
    path = Path(path)
    if path.exists():
        return json.loads(path.read_text())
    if getattr(cfg, "resume", True) is False and (Path(cfg.out) / "train_state.pt").exists():
        print(f"resuming {cfg.out} from its checkpoint")
        cfg = dataclasses.replace(cfg, resume=True)
    return to_jsonable(run(cfg))


def to_jsonable(obj: Any) -> Any:
    """Dataclasses (nested) → plain dicts for config.json; NaN and ±inf → None (null), so every JSON file a
    phase writes is strict JSON that jq or a browser reads."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


# Fields any resumed run may change: where its data and folder are, how it runs, how it is scored (each phase
# adds its budget and the folders it reads, e.g. rl's `model`; pretrain's `model` is its architecture: fixed).
RESUME_FREE = frozenset({"data", "out", "resume", "threads", "device", "progress", "log_every", "ckpt_every",
                         "eval_every", "eval_episodes"})


def config_from_saved(default: Any, saved: dict) -> Any:
    """`default` (a config dataclass) with the values a run folder's config.json saved for it (nested configs
    too); fields the file lacks (older runs) keep the default's values."""
    kw = {}
    for f in dataclasses.fields(default):
        if f.name not in saved or not f.init:
            continue
        cur, val = getattr(default, f.name), saved[f.name]
        if dataclasses.is_dataclass(cur) and isinstance(val, dict):
            val = config_from_saved(cur, val)
        elif isinstance(cur, tuple) and isinstance(val, list):
            val = tuple(val)
        kw[f.name] = val
    return dataclasses.replace(default, **kw)


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        return [d for k in now if k in saved for d in _differences(saved[k], now[k], f"{prefix}{k}.")]
    return [] if saved == now else [f"{prefix[:-1]} = {saved!r} in the run, {now!r} now"]


def check_resume(out: Path, key: str, cfg: Any, free: frozenset[str]) -> None:
    """Refuse to resume the run in `out` with settings other than its own (config.json[key]), except the
    fields in `free`: a resumed run continues the run it was, or says which settings differ."""
    path = Path(out) / "config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text()).get(key)
    if saved is None:
        return
    now = json.loads(json.dumps(to_jsonable(cfg)))
    diffs = [d for k in now if k in saved and k not in free for d in _differences(saved[k], now[k], f"{k}.")]
    if diffs:
        raise ValueError(f"--resume: {out} was trained with other settings ({'; '.join(diffs)}); "
                         "resume it with its own (`--resume` alone reads them from its config.json) or start "
                         "a new --out")


def report_budget_reached(phase: str, out: Path, done: str, flag: str, limit: int) -> None:
    """Say aloud that a resumed run already spent its budget (`done`, e.g. "step 800"), so that a resume
    with the same budget is not mistaken for training: the phase only evaluates; a larger `flag` continues it."""
    print(f"[{phase}] {out} is at {done}, at or past {flag} {limit}: nothing to train, evaluating only "
          f"(a larger {flag} continues it)", flush=True)


class MetricsLogger:
    """Append rows to metrics.csv and TensorBoard; survives resume (appends to the same files, its `time` column
    continuing from the last kept row)."""

    def __init__(self, folder: str | Path, tensorboard: bool = True, resume_step: int | None = None):
        """`resume_step`: a resumed run; drop rows logged after that step (by a run that died after its last
        checkpoint). None: a fresh run, which replaces the logs an earlier run left in the folder."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.folder / "metrics.csv"
        elapsed = 0.0  # a resumed run's clock continues from its last kept row
        if resume_step is None:
            self.csv_path.unlink(missing_ok=True)
            for old in (self.folder / "tb").glob("events.out.tfevents.*"):
                old.unlink()
        elif self.csv_path.exists():
            with open(self.csv_path) as f:
                reader = csv.DictReader(f)
                fields, rows = reader.fieldnames or [], [r for r in reader if float(r["step"]) <= resume_step]
            with open(self.csv_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
            if rows and rows[-1].get("time"):
                elapsed = float(rows[-1]["time"])
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.folder / "tb"))
            except ImportError:  # tensorboard missing: CSV only
                self.writer = None
        self.start = time.time() - elapsed

    def log(self, step: int, **metrics: float) -> None:
        row = {"step": step, "time": round(time.time() - self.start, 3)}
        row.update({k: float(v) for k, v in metrics.items()})
        exists = self.csv_path.exists()
        fields = list(row)
        if exists:
            with open(self.csv_path) as f:
                header = f.readline().strip().split(",")
            if set(fields) <= set(header):
                fields = header
            else:
                fields = header + [k for k in fields if k not in header]
                self._rewrite_header(fields)
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, restval="")
            if not exists:
                w.writeheader()
            w.writerow(row)
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, float(v), step)

    def _rewrite_header(self, fields: list[str]) -> None:
        with open(self.csv_path) as f:
            rows = list(csv.DictReader(f))
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, restval="")
            w.writeheader()
            w.writerows(rows)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(folder: str | Path) -> list[dict[str, float]]:
    """Rows of a run's metrics.csv as floats (empty cells dropped)."""
    with open(Path(folder) / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def save_train_state(folder: str | Path, step: int, optimizer: torch.optim.Optimizer,
                     scheduler: Any = None, extra: dict | None = None) -> None:
    """Optimizer, scheduler, step and every RNG state, so `--resume` continues the same run."""
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "extra": extra or {},
    }
    path = Path(folder) / "train_state.pt"
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def load_train_state(folder: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any = None) -> dict:
    """Restore what `save_train_state` wrote; returns the dict (step, extra)."""
    path = Path(folder) / "train_state.pt"
    if not path.exists():
        raise FileNotFoundError(f"cannot resume: {path} not found")
    state = torch.load(path, weights_only=False, map_location="cpu")  # the optimizer moves its state to the params
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state


def lr_lambda(schedule: str, total: int, warmup: int):
    """Multiplier on the base learning rate: 'constant' (paper) or 'cosine' decay to 0 after warmup."""
    import math

    if schedule not in ("constant", "cosine", "linear"):
        raise ValueError(f"unknown lr schedule {schedule!r}: expected constant, cosine or linear")

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1.0 - frac

    return f
