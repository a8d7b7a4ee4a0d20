"""Pretraining throughput: tokens/s and achieved FLOP/s of a training step, beside a plain matmul of
similar size timed in the same run (so the ratio is robust to machine load). With several `--amp` modes the
modes alternate within each repeat, so their ratio is measured side by side.

    python bench/bench_pretrain.py [--preset quick] [--threads 2] [--repeats 5] [--amp none bf16] [--device cuda]

It also prints the FLOPs of one step and what the preset's whole run would take at the measured rate
(for `--preset paper`: the CPU cost of the paper's pretraining, the scale a GPU is for).
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
from internal_rl.phases.common import resolve_device, synchronize
from internal_rl.phases.pretrain import length_bucketed_batch, make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--encoder", default="", help="override the preset's observation encoder (linear, grid, nav)")
    ap.add_argument("--amp", nargs="+", default=["none"], choices=["none", "bf16"],
                    help="training-step precision(s): none (float32) or bf16 autocast; several alternate per repeat")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (auto: CUDA when available)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    cfg = pretrain_config(args.preset, "", "")
    mcfg = model_config(args.preset)
    if args.encoder:
        mcfg.encoder = args.encoder
    model = SequenceModel(mcfg).to(dev)
    opt = make_optimizer(model.parameters(), cfg)
    data = generate_pinpad(4000, eps=0.0, seed=0, progress=False)
    batches = [data.batch(length_bucketed_batch(data.lengths, cfg.batch_size, 0, s), dev) for s in range(args.steps)]

    def train_step(b, amp="none"):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
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
    a32, b32 = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    operands = {"none": (a32, b32), "bf16": (a32.bfloat16(), b32.bfloat16())}
    step_tok = {m: [] for m in args.amp}
    step_flops = {m: [] for m in args.amp}
    mm_flops = {m: [] for m in args.amp}
    for amp in args.amp:  # warm-up: first use of each precision's kernels
        train_step(batches[0], amp)
    for _ in range(args.repeats):
        for amp in args.amp:
            synchronize(dev)
            t = time.perf_counter()
            tok = pad = 0
            for bt in batches:
                train_step(bt, amp)
                tok += int(bt["mask"].sum())
                pad += bt["mask"].numel()
            synchronize(dev)
            dt = time.perf_counter() - t
            step_tok[amp].append(tok / dt)
            step_flops[amp].append(flops_first / tokens_first * pad / dt)
            a, b = operands[amp]
            synchronize(dev)
            t = time.perf_counter()
            for _ in range(5):
                a @ b
            synchronize(dev)
            mm_flops[amp].append(5 * 2 * n**3 / (time.perf_counter() - t))
    med = statistics.median
    n_params = sum(p.numel() for p in model.parameters())
    print(f"preset {args.preset} ({mcfg.encoder} encoder), {n_params:,} params, batch {cfg.batch_size}, "
          f"{dev}, {args.threads} threads, median of {args.repeats}")
    for amp in args.amp:
        name = "float32" if amp == "none" else "bf16 autocast"
        tok, fl, mm = step_tok[amp], med(step_flops[amp]), med(mm_flops[amp])
        print(f"pretraining, {name}: {med(tok):,.0f} valid tokens/s ({min(tok):,.0f}-{max(tok):,.0f}; "
              f"{med(tok) * 60 / 1e6:.2f} M/min), {fl / 1e9:.1f} GFLOP/s achieved; plain {n}x{n} "
              f"{'float32' if amp == 'none' else 'bf16'} matmul {mm / 1e9:.1f} GFLOP/s, the step reaches {fl / mm:.0%} of it")
    # what the preset's whole pretraining run costs at these rates (the step's counted FLOPs scale with the
    # padded tokens; the first batch's FLOPs per padded token stand for every batch)
    pad_per_step = statistics.mean(int(bt["mask"].numel()) for bt in batches)
    step_flop = flops_first / tokens_first * pad_per_step
    print(f"one step: {step_flop / 1e9:,.1f} GFLOP of matrix products (counted; {pad_per_step:,.0f} padded tokens); "
          f"the preset's {cfg.steps:,} steps: {step_flop * cfg.steps:.2e} FLOP")
    for amp in args.amp:
        step_s = statistics.mean(int(bt["mask"].sum()) for bt in batches) / med(step_tok[amp])
        print(f"  {'float32' if amp == 'none' else 'bf16 autocast'}: {step_s:.3f} s per step here, so "
              f"{step_s * cfg.steps / 3600:,.1f} h for the preset's steps on {dev} ({args.threads} CPU thread(s))")
    if len(args.amp) > 1:
        ratios = [x / y for x, y in zip(step_tok[args.amp[1]], step_tok[args.amp[0]])]
        print(f"tokens/s {args.amp[1]} / {args.amp[0]}, per repeat: " + ", ".join(f"{r:.2f}" for r in ratios)
              + f" (median {med(ratios):.2f})")


if __name__ == "__main__":
    main()
