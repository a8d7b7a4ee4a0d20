"""Speed and memory of our seed-style API (internal_rl.api) against metacontroller-pytorch==0.3.3.

Each implementation runs in its own subprocess (one per (implementation, batch, T) so that the peak
RSS is per configuration), with one thread (torch.set_num_threads(1), OMP/MKL/XLA single-threaded),
on the same sizes: dim 128, dim_meta_controller 64, dim_latent 32, state 96, 4 discrete actions,
depth 2 + 2, 4 heads of 32, MLP 4·dim, low rank 16. Measured per configuration:

- discovery: forward + backward of the discovery losses on (B, T) sequences (median of reps);
- rollout: one step of ``model(one_state, past_action, meta_controller=mc, cache=cache)`` (mean over a
  rollout of T steps; the median of three rollouts, after a warm-up rollout);
- policy_loss: forward + backward of the RL loss on the rollout's (B, T) records (median of reps);
- peak RSS: ru_maxrss of the subprocess.

Ours runs twice: ``ours`` (the eager step) and ``ours_compiled`` (after ``model.compile_rollout()``: the
same step with static shapes through torch.compile, its cache starting at 32 slots and doubling; its first
step compiles, reported as ``first_step_s``, the graphs of the larger capacities compile during the
warm-up rollout, ``warmup_rollout_s``, and its process also holds the compiler, so its peak RSS is not the
memory figure to compare). Every implementation is warmed up with one whole T-step rollout before the
timed ones.

Setup (a separate venv; torch first so that no CUDA build is pulled; it also pulls JAX)::

    python3 -m venv /tmp/mcpt && /tmp/mcpt/bin/pip install torch==2.13.0 metacontroller-pytorch==0.3.3

Run: ``.venv/bin/python bench/compare_metacontroller_pytorch.py [--reps 5] [--T 64 128 256]``.
Goals: discovery ≥ 3× faster, rollout step ≥ 10× faster, peak memory ≤ half of theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from seed_sizes import ACTIONS, DEPTH, DIM, DIM_HEAD, DIM_LATENT, DIM_META, HEADS, STATE, build_ours

OURS_PY = sys.executable  # run this script with the project venv
THEIRS_PY = "/tmp/mcpt/bin/python"
IMPLS = ("ours", "ours_compiled", "theirs")  # ours_compiled: the same model after model.compile_rollout()
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
}


# ------------------------------------------------------------------------------------------ workers
def _build(impl: str, length: int):
    """(model, metacontroller, discovery_loss_fn, rollout_step_fn, policy_loss_fn) for one implementation."""
    import torch

    if impl.startswith("ours"):
        model, mc = build_ours(max_len=max(length, 128))  # the model takes sequences up to max_len
        if impl == "ours_compiled":
            model.compile_rollout(capacity=32)  # the cache doubles 32 -> 64 -> ...: one graph per capacity

        def policy_loss(states, old, z, adv, betas):
            return mc.policy_loss(states, old, z, adv, betas)

        stack = lambda xs: torch.stack(xs, 1)  # noqa: E731  (per-step records are (B, ·))
    else:
        from metacontroller import MetaController, Transformer

        block = dict(depth=DEPTH, heads=HEADS, attn_dim_head=DIM_HEAD)
        model = Transformer(dim=DIM, action_embed_readout=dict(num_discrete=ACTIONS),
                            state_embed_readout=dict(num_continuous=STATE), lower_body=dict(block),
                            upper_body=dict(block))
        mc = MetaController(DIM, dim_meta_controller=DIM_META, dim_latent=DIM_LATENT)

        def policy_loss(states, old, z, adv, betas):
            return mc.policy_loss(states, old, z, adv, mask=betas)

        stack = lambda xs: torch.cat(xs, 1)  # noqa: E731  (per-step records are (B, 1, ·))

    def discovery(state, actions):
        return sum(model(state, actions, meta_controller=mc, discovery_phase=True))

    def record(cache):
        m = cache.prev_hiddens.meta_controller
        return m.input_residual_stream, mc.log_prob(m.action_dist, m.actions), m.actions, m.switch_beta

    return model, mc, discovery, record, policy_loss, stack


def worker(impl: str, batch: int, length: int, reps: int) -> dict:
    """Measure one configuration in this process; returns a JSON-able dict."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    t_import = time.perf_counter()
    model, mc, discovery, record, policy_loss, stack = _build(impl, length)
    build_s = time.perf_counter() - t_import
    state = torch.randn(batch, length, STATE)
    actions = torch.randint(0, ACTIONS, (batch, length))

    # discovery: forward + backward
    times = []
    for i in range(reps + 1):
        mc.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        discovery(state, actions).backward()
        if i:  # the first call warms up
            times.append(time.perf_counter() - t0)
    disc = statistics.median(times)

    # rollout with the cache
    def roll(steps: int):
        cache, past, recs = None, None, []
        t0 = time.perf_counter()
        with torch.no_grad():
            for t in range(steps):
                logits, cache = model(state[:, t:t + 1], past, meta_controller=mc, return_cache=True, cache=cache)
                recs.append(record(cache))
                past = torch.distributions.Categorical(logits=logits).sample()  # (B, 1)
        return (time.perf_counter() - t0) / steps, recs

    t0 = time.perf_counter()
    roll(1)  # the compiled step compiles here
    first_step_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    roll(length)  # warm-up: a whole rollout (the compiled step compiles the graphs of larger capacities here)
    warmup_s = time.perf_counter() - t0
    timed = [roll(length) for _ in range(3)]  # the median of three rollouts (one is too noisy at T = 64)
    step_s, recs = sorted(timed, key=lambda r: r[0])[1]
    states, old, z, betas = (stack([r[i] for r in recs]) for i in range(4))
    adv = torch.randn(batch)

    times = []
    for i in range(reps + 1):
        mc.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        policy_loss(states, old, z, adv, betas).backward()
        if i:
            times.append(time.perf_counter() - t0)
    pl = statistics.median(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    return {"impl": impl, "batch": batch, "T": length, "discovery_s": disc, "rollout_step_ms": 1e3 * step_s,
            "policy_loss_s": pl, "peak_rss_gb": rss, "build_s": build_s, "first_step_s": first_step_s,
            "warmup_rollout_s": warmup_s,
            "switch_frac": float((betas > 0.5).float().mean())}


# ------------------------------------------------------------------------------------------- driver
def run_one(impl: str, batch: int, length: int, reps: int) -> dict:
    py = THEIRS_PY if impl == "theirs" else OURS_PY
    env = dict(os.environ, **SINGLE_THREAD_ENV)
    cmd = [py, os.path.abspath(__file__), "--worker", impl, "--batch", str(batch), "--T", str(length),
           "--reps", str(reps)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} B={batch} T={length} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=IMPLS)
    ap.add_argument("--batch", type=int, nargs="+", default=[2, 32])
    ap.add_argument("--T", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch[0], args.T[0], args.reps)))
        return
    for impl in args.impls:
        py = THEIRS_PY if impl == "theirs" else OURS_PY
        if not os.path.exists(py):
            sys.exit(f"{py} not found (see the setup line in this script's docstring)")

    results = {}
    for batch in args.batch:
        for length in args.T:
            for impl in args.impls:
                r = run_one(impl, batch, length, args.reps)
                results[(impl, batch, length)] = r
                print(f"  {impl:13s} B={batch:<3d} T={length:<4d} discovery {r['discovery_s']:.4f} s  "
                      f"rollout {r['rollout_step_ms']:.3f} ms/step (first step {r['first_step_s']:.2f} s, "
                      f"warm-up rollout {r['warmup_rollout_s']:.1f} s)  "
                      f"policy_loss {r['policy_loss_s']:.4f} s  peak {r['peak_rss_gb']:.3f} GB", flush=True)

    cols = ("ours          B    T   | discovery s (ours/theirs  x) | rollout ms/step (ours/theirs  x) | "
            "policy_loss s (ours/theirs  x) | peak GB (ours/theirs  x)")
    print("\n" + cols + "\n" + "-" * len(cols))
    for ours in (i for i in IMPLS if i != "theirs"):
        for batch in args.batch:
            for length in args.T:
                o, t = results.get((ours, batch, length)), results.get(("theirs", batch, length))
                if o is None or t is None:
                    continue

                def cell(key: str, fmt: str) -> str:
                    return f"{o[key]:{fmt}} / {t[key]:{fmt}}  {t[key] / o[key]:5.1f}x"

                print(f"{ours:13s} {batch:<4d} {length:<4d}| {cell('discovery_s', '.4f'):28s} | "
                      f"{cell('rollout_step_ms', '.3f'):33s} | {cell('policy_loss_s', '.4f'):30s} | "
                      f"{cell('peak_rss_gb', '.3f')}")
    print("\nx = theirs / ours (higher is better for ours). Goals: discovery >= 3x, rollout >= 10x, memory >= 2x.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(v) for v in results.values()], f, indent=1)


if __name__ == "__main__":
    main()
