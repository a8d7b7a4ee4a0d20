"""Pretraining throughput: tokens/s and achieved FLOP/s of a training step, beside a plain matmul of
similar size timed in the same run (so the ratio is robust to machine load).

    python bench/bench_pretrain.py [--preset quick] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from internal_rl.data.pinpad_dataset import generate_pinpad
from internal_rl.experiments.presets import model_config, pretrain_config
from internal_rl.models.sequence_model import SequenceModel
from internal_rl.phases.pretrain import length_bucketed_batch, make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--encoder", default="", help="override the preset's observation encoder (linear, grid, nav)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = pretrain_config(args.preset, "", "")
    mcfg = model_config(args.preset)
    if args.encoder:
        mcfg.encoder = args.encoder
    model = SequenceModel(mcfg)
    opt = make_optimizer(model.parameters(), cfg)
    data = generate_pinpad(4000, eps=0.0, seed=0, progress=False)
    batches = [data.batch(length_bucketed_batch(data.lengths, cfg.batch_size, 0, s)) for s in range(args.steps)]

    def train_step(b):
        loss = model.loss(b, cfg.obs_weight)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        train_step(batches[0])
    flops_first = fc.get_total_flops()
    tokens_first = batches[0]["mask"].numel()
    # plain matmul with the same FLOPs as one step on the first batch
    n = int(round((flops_first / 2) ** (1 / 3)))
    a, b = torch.randn(n, n), torch.randn(n, n)
    step_tok, step_flops, mm_flops = [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        tok = pad = 0
        for bt in batches:
            train_step(bt)
            tok += int(bt["mask"].sum())
            pad += bt["mask"].numel()
        dt = time.perf_counter() - t
        step_tok.append(tok / dt)
        step_flops.append(flops_first / tokens_first * pad / dt)
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        mm_flops.append(5 * 2 * n**3 / (time.perf_counter() - t))
    med = statistics.median
    n_params = sum(p.numel() for p in model.parameters())
    print(f"preset {args.preset} ({mcfg.encoder} encoder), {n_params:,} params, batch {cfg.batch_size}, "
          f"{args.threads} threads, median of {args.repeats}")
    print(f"pretraining: {med(step_tok):,.0f} valid tokens/s ({med(step_tok) * 60 / 1e6:.2f} M/min), "
          f"{med(step_flops) / 1e9:.1f} GFLOP/s achieved")
    print(f"plain {n}x{n} matmul: {med(mm_flops) / 1e9:.1f} GFLOP/s; training step reaches "
          f"{med(step_flops) / med(mm_flops):.0%} of it")


if __name__ == "__main__":
    main()
