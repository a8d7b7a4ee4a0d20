"""Option-level rollout throughput: primitive env steps per second *including the model* (base model
with KV cache, switching unit, decoder and latent policy), at several batch sizes.

    python bench/bench_rollout.py [--preset quick] [--threads 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from internal_rl.control.metacontroller import MetaController
from internal_rl.experiments.presets import discover_config, model_config
from internal_rl.models.sequence_model import SequenceModel, freeze
from internal_rl.phases.common import resolve_device, synchronize
from internal_rl.rl.option_env import OptionCore
from internal_rl.rl.policy import LatentPolicy
from internal_rl.rl.ppo import collect_latent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (auto: CUDA when available)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    torch.manual_seed(0)
    model = freeze(SequenceModel(model_config(args.preset))).to(dev)
    mc = freeze(MetaController(discover_config(args.preset, "", "", "").metacontroller_config(model.config.d_model)))
    mc.to(dev)
    pol = LatentPolicy(model.config.d_model, mc.config.n_z).to(dev)
    for n in args.batches:
        rates = []
        for r in range(args.repeats):
            core = OptionCore(model, mc, model.config.control_layer, n, seed=r)
            synchronize(dev)
            t = time.perf_counter()
            ro = collect_latent(core, pol, seed=r)
            synchronize(dev)
            rates.append(int(ro.env_steps.sum()) / (time.perf_counter() - t))
        print(f"batch {n:5d}: {statistics.median(rates):10,.0f} primitive env steps/s (median of {args.repeats}, "
              f"untrained model: episodes end early on wrong colours)")


if __name__ == "__main__":
    main()
