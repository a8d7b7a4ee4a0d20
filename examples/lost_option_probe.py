"""Can a trained internal-RL policy's input tell which of its options will fail?

Collects ``--batches`` × ``--batch-size`` fresh post-task episodes with a finished ``internal-rl rl`` run's
policy (drawn z, the run's primitive-action temperature, one layout per episode), labels each decision fatal
(the option during which a failed episode ended) or safe, trains a causal-SSM probe on the residual streams the
policy read (``internal_rl.analysis.lost_options``) on the first batches and scores it on the last
``--heldout`` batches: the AUC pooled over decisions and within each decision index, beside a baseline that
knows only the decision index. An AUC near 0.5 within an index says the input, as a probe this size can read
it from this much data, does not tell the options that will fail from the others.

Run: ``python examples/lost_option_probe.py --rl RL_DIR --out OUT.json`` (docs/RESULTS.md, Session 23).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from internal_rl.analysis.lost_options import fatal_aucs, fatal_decisions, index_only_scores, train_fatal_probe
from internal_rl.phases.rl import load_finished_agent


def collect(run: str, batches: int, batch_size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(inputs (N, K, D), mask (N, K), fatal (N, K), success (N,)) over `batches` batches of the run's policy."""
    agent, _ = load_finished_agent(run)
    ros = [agent.collect(batch_size, seed=seed + 7919 * i) for i in range(batches)]
    K = max(ro.mask.shape[1] for ro in ros)

    def pad(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, K - x.shape[1]))

    inputs = torch.cat([pad(ro.inputs) for ro in ros])
    mask = torch.cat([pad(ro.mask) for ro in ros])
    success = torch.cat([ro.success for ro in ros]).bool()
    return inputs, mask, fatal_decisions(mask, success), success


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rl", required=True, help="a finished internal-rl rl folder (z-space method)")
    ap.add_argument("--out", required=True, help="where to write the figures (JSON)")
    ap.add_argument("--batches", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--heldout", type=int, default=8, help="the last this many batches score the probe")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=77_000_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not 0 < args.heldout < args.batches:
        raise SystemExit(f"--heldout must be between 1 and --batches − 1, got {args.heldout}")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    inputs, mask, fatal, success = collect(args.rl, args.batches, args.batch_size, args.seed)
    n_train = (args.batches - args.heldout) * args.batch_size
    train, test = torch.arange(n_train), torch.arange(n_train, inputs.shape[0])
    t1 = time.time()
    probe = train_fatal_probe(inputs[train], mask[train], fatal[train], epochs=args.epochs, seed=args.seed)
    with torch.no_grad():
        scores = torch.cat([probe(inputs[i], mask[i]) for i in torch.arange(inputs.shape[0]).split(1024)])
    res = {"rl": args.rl, "episodes": int(inputs.shape[0]), "train_episodes": n_train,
           "success": float(success.float().mean()), "decisions_per_episode": float(mask.sum(1).float().mean()),
           "probe": fatal_aucs(scores, mask, fatal, test),
           "index_only": fatal_aucs(index_only_scores(mask, fatal, train), mask, fatal, test),
           "probe_on_train": fatal_aucs(scores, mask, fatal, train),
           "seconds_collect": t1 - t0, "seconds_probe": time.time() - t1}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    p, b = res["probe"], res["index_only"]
    print(f"{args.rl}: success {res['success']:.3f}, {p['fatal']} fatal of {p['decisions']} held-out decisions")
    print(f"  held-out AUC pooled: probe {p['pooled']:.3f}, decision index only {b['pooled']:.3f}; "
          f"within a decision index: probe {p['within_index']:.3f} (on its training episodes "
          f"{res['probe_on_train']['within_index']:.3f})")
    print("  by decision (index: fatal, AUC): " + "; ".join(f"{r['decision']}: {r['fatal']}, {r['auc']:.2f}"
                                                         for r in p["by_decision"]))


if __name__ == "__main__":
    main()
