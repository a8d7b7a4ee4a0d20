"""The grid/nav encoder's sparse form (sums of weight columns over the observation's non-zeros) against the
dense form it replaced (flat map + explicitly built egocentric window through dense matrices), side by side in
one process: encoder forward+backward alone, whole quick-preset training steps with each form, and the
forward alone without gradients (a rollout's call, one observation per episode) at several batch sizes.

    python bench/bench_encoder.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from einops import rearrange

from internal_rl.data.pinpad_dataset import generate_pinpad
from internal_rl.envs.pinpad import BatchedPinPad
from internal_rl.experiments.presets import model_config, pretrain_config
from internal_rl.models.encoders import GridEncoder
from internal_rl.models.sequence_model import SequenceModel
from internal_rl.phases.pretrain import length_bucketed_batch, make_optimizer


def dense_forward(self: GridEncoder, obs: torch.Tensor) -> torch.Tensor:
    """The previous GridEncoder.forward: every map a dense product, the window built with zeros and scatter."""
    lead = obs.shape[:-1]
    flat = obs.reshape(-1, obs.shape[-1])
    under, window = self.egocentric(flat)
    e = self.flat(flat) + self.under(under) + self.ego(rearrange(window, "n w k -> n (w k)"))
    return e.reshape(*lead, -1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rollout-batches", type=int, nargs="+", default=[1, 16, 64, 256, 1024])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = pretrain_config("quick", "", "")
    model = SequenceModel(model_config("quick"))
    opt = make_optimizer(model.parameters(), cfg)
    data = generate_pinpad(4000, eps=0.0, seed=0, progress=False)
    batches = [data.batch(length_bucketed_batch(data.lengths, cfg.batch_size, 0, s)) for s in range(args.steps)]
    forms = {"dense": dense_forward, "sparse": GridEncoder.forward}
    sparse = GridEncoder.forward

    def encoder_pass() -> None:
        for b in batches:
            model.zero_grad(set_to_none=True)
            model.encoder(b["obs"]).sum().backward()

    def train_steps() -> None:
        for b in batches:
            loss = model.loss(b, cfg.obs_weight)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    times = {(f, w): [] for f in forms for w in ("encoder", "step")}
    try:
        for rep in range(args.repeats + 1):  # the first round warms up
            for form, fn in forms.items():
                GridEncoder.forward = fn
                for what, work in (("encoder", encoder_pass), ("step", train_steps)):
                    t = time.perf_counter()
                    work()
                    if rep:
                        times[(form, what)].append((time.perf_counter() - t) / len(batches) * 1e3)
    finally:
        GridEncoder.forward = sparse
    rollout = {}
    for n in args.rollout_batches:
        env = BatchedPinPad(n, seed=0)
        env.reset(None, seed=0)
        obs = torch.as_tensor(env.obs, dtype=torch.float32)
        with torch.no_grad():
            for rep in range(args.repeats + 1):
                for form, fn in forms.items():
                    t = time.perf_counter()
                    for _ in range(100):
                        fn(model.encoder, obs)
                    if rep:
                        rollout.setdefault((form, n), []).append((time.perf_counter() - t) * 1e4)  # µs per call
    med = statistics.median
    print(f"quick preset (nav encoder), batch {cfg.batch_size}, {args.threads} threads, "
          f"ms per batch, median (min-max) of {args.repeats}")
    for what in ("encoder", "step"):
        d, s = times[("dense", what)], times[("sparse", what)]
        label = "encoder forward+backward" if what == "encoder" else "whole training step"
        print(f"{label}: dense {med(d):.1f} ({min(d):.1f}-{max(d):.1f}), sparse {med(s):.1f} "
              f"({min(s):.1f}-{max(s):.1f}), dense/sparse {med([x / y for x, y in zip(d, s)]):.2f}")
    for n in args.rollout_batches:
        d, s = rollout[("dense", n)], rollout[("sparse", n)]
        print(f"forward without gradients, {n:5d} observations: dense {med(d):8.0f} µs, sparse {med(s):8.0f} µs, "
              f"dense/sparse {med([x / y for x, y in zip(d, s)]):.2f}")


if __name__ == "__main__":
    main()
