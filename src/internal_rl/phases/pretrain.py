"""Pretraining: fit the base sequence model to expert actions (and, weighted by λ, next observations).

L(θ) = Σ_t −log p(a_t | o_1..t) − λ log p(o_{t+1} | o_1..t)   (paper Eq. 1), AdamW, padding masked.
Reads a data run folder (D/ and D_heldout/), writes a model run folder that `--resume` continues.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from internal_rl.data.trajectories import Trajectories
from internal_rl.models.sequence_model import SequenceModel, SequenceModelConfig
from internal_rl.phases.common import (
    RESUME_FREE,
    MetricsLogger,
    check_resume,
    load_train_state,
    lr_lambda,
    report_budget_reached,
    resolve_amp,
    resolve_device,
    save_train_state,
    set_seed,
    set_threads,
    write_json,
)


@dataclass
class PretrainConfig:
    """Pretraining run (paper App. D.1 defaults are in the `paper` preset)."""

    data: str = "runs/demo/data"
    """Data run folder holding D/ and D_heldout/ (from `internal-rl data`)."""
    out: str = "runs/demo/pretrain"
    """Run folder to write (checkpoint, metrics.csv, TensorBoard, results.json)."""
    model: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.03
    beta1: float = 0.9
    beta2: float = 0.999
    lr_schedule: str = "constant"
    """'constant' (paper), 'cosine' or 'linear' decay to zero."""
    warmup_steps: int = 0
    obs_weight: float = 0.01
    """λ: weight of the next-observation NLL."""
    grad_clip: float = 1.0
    """Clip the gradient norm (0 = off)."""
    amp: str = "none"
    """Mixed precision of the training steps: 'none' (float32), 'bf16' (bfloat16 autocast of the matrix
    products; weights, AdamW state, losses and every evaluation stay float32) or 'auto' (bf16 where the
    device has bf16 matrix instructions). The quick preset uses 'auto': 1.3x the tokens/s on an AVX-512 BF16 CPU
    (docs/RESULTS.md, Session 14)."""
    eval_every: int = 500
    eval_episodes: int = 512
    rollout_episodes: int = 256
    """Episodes of free-running rollouts on the pretraining tasks at the end (success rate; 0 = skip)."""
    log_every: int = 50
    ckpt_every: int = 500
    seed: int = 0
    threads: int = 0
    """torch intra-op threads (0 = torch default)."""
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'."""
    resume: bool = False
    """Continue the run in `out` from its last checkpoint."""
    progress: bool = True


def length_bucketed_batch(lengths: np.ndarray, batch_size: int, seed: int, step: int, pool: int = 16) -> np.ndarray:
    """Episode indices of batch `step`: pools of pool·batch_size episodes drawn uniformly, sorted by length
    and cut into batches served in random order. Sampling stays uniform while padding shrinks several-fold;
    the batch is a pure function of (seed, step), so a resumed run sees exactly the batches it would have."""
    rng = np.random.default_rng([seed, step // pool])
    idx = rng.integers(0, len(lengths), pool * batch_size)
    idx = idx[np.argsort(lengths[idx], kind="stable")]
    b = rng.permutation(pool)[step % pool]
    return idx[b * batch_size:(b + 1) * batch_size]


def make_optimizer(params, cfg: PretrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))


@torch.no_grad()
def heldout_nll(model: SequenceModel, data: Trajectories, n: int, batch_size: int = 256,
                obs_weight: float = 0.0) -> dict[str, float]:
    """Per-step held-out action and observation NLL over the first n episodes (step-weighted)."""
    model.eval()
    n = min(n, len(data))
    tot = {"action_nll": 0.0, "obs_nll": 0.0}
    steps = 0
    device = next(model.parameters()).device
    for s in range(0, n, batch_size):
        b = data.batch(np.arange(s, min(n, s + batch_size)), device)
        k = int(b["mask"].sum())
        out = model.loss(b, obs_weight)
        tot["action_nll"] += out["action_nll"].item() * k
        tot["obs_nll"] += out["obs_nll"].item() * k
        steps += k
    model.train()
    return {k: v / max(steps, 1) for k, v in tot.items()}


def run_pretrain(cfg: PretrainConfig) -> dict:
    """Train (or resume) the base model; returns and writes results.json."""
    if cfg.steps < 0 or cfg.batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {cfg.steps}, {cfg.batch_size}")
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp = resolve_amp(cfg.amp, device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    data_dir = Path(cfg.data)
    train = Trajectories.load(data_dir / "D")
    heldout = Trajectories.load(data_dir / "D_heldout")
    if train.obs_dim != cfg.model.obs_dim:
        raise ValueError(f"data has obs_dim {train.obs_dim} but model.obs_dim is {cfg.model.obs_dim}")

    if cfg.resume:
        check_resume(out, "pretrain", cfg, RESUME_FREE | {"steps", "amp"})
        model = SequenceModel.from_pretrained(out)
    else:
        model = SequenceModel(cfg.model)
    model.to(device).train()
    opt = make_optimizer(model.parameters(), cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.lr_schedule, cfg.steps, cfg.warmup_steps))
    step = 0
    if cfg.resume:
        state = load_train_state(out, opt, sched)
        step = state["step"]
        if step >= cfg.steps:
            report_budget_reached("pretrain", out, f"step {step}", "--steps", cfg.steps)
    write_json(out / "config.json", {"model": model.config, "pretrain": cfg})
    logger = MetricsLogger(out, resume_step=step if cfg.resume else None)
    n_params = sum(p.numel() for p in model.parameters())
    bar = tqdm(total=cfg.steps, initial=step, desc="pretrain", disable=not cfg.progress, dynamic_ncols=True)
    t0, tokens, ema = time.time(), 0, None

    def checkpoint():
        model.save_pretrained(out)
        write_json(out / "config.json", {"model": model.config, "pretrain": cfg})
        save_train_state(out, step, opt, sched)

    lengths = np.asarray(train.lengths)
    while step < cfg.steps:
        idx = length_bucketed_batch(lengths, cfg.batch_size, cfg.seed, step)
        batch = train.batch(idx, device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            losses = model.loss(batch, cfg.obs_weight)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        tokens += int(lengths[idx].sum())
        a = losses["action_nll"].item()
        ema = a if ema is None else 0.98 * ema + 0.02 * a
        bar.update(1)
        bar.set_postfix(nll=f"{ema:.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.time() - t0
            logger.log(step, action_nll=a, obs_nll=losses["obs_nll"].item(), lr=sched.get_last_lr()[0],
                       tokens_per_s=tokens / max(dt, 1e-9))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            ev = heldout_nll(model, heldout, cfg.eval_episodes)
            logger.log(step, heldout_action_nll=ev["action_nll"], heldout_obs_nll=ev["obs_nll"])
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            checkpoint()
    bar.close()
    if not (out / "model.safetensors").exists():
        checkpoint()
    final = heldout_nll(model, heldout, len(heldout))
    stats_path = data_dir / "data_stats.json"
    floor = None
    if stats_path.exists():
        import json

        floor = json.loads(stats_path.read_text()).get("expert", {}).get("entropy_nats_per_step")
    rollout = {"success": None}
    if cfg.rollout_episodes > 0:
        from internal_rl.rl.rollout import evaluate

        rollout = evaluate(model, None, cfg.rollout_episodes, seed=cfg.seed + 12345)
    results = {
        "heldout_action_nll": final["action_nll"],
        "pretrain_task_success": rollout["success"],
        "heldout_obs_nll": final["obs_nll"],
        "expert_entropy_nats": floor,
        "uniform_nll": math.log(model.config.n_actions) if model.config.discrete else None,
        "steps": step,
        "params": n_params,
        "amp": str(amp).removeprefix("torch.") if amp is not None else "none",
        "train_seconds_this_session": time.time() - t0,
    }
    write_json(out / "results.json", results)
    logger.close()
    extra = "" if floor is None else f" (expert entropy {floor:.3f})"
    if rollout["success"] is not None:
        extra += f", pretraining-task success {rollout['success']:.3f}"
    print(f"[pretrain] step {step}: held-out action NLL {final['action_nll']:.4f} nats/step{extra}; "
          f"model and results -> {out}")
    return results
