"""Where the peak memory of the seed-API comparison's process goes, phase by phase (issue 5's memory goal).

bench/compare_metacontroller_pytorch.py reports one number per configuration, the subprocess's peak RSS.
This script runs the same sizes (dim 128, depth 2 + 2, dim_meta_controller 64, dim_latent 32, state 96,
4 actions, one thread) in one process and prints, after each phase (import torch, import internal_rl,
building the model and metacontroller, a no-grad forward, a forward with grad, the discovery forward and
backward, a cached rollout that records what the comparison records, ``policy_loss`` forward and backward):

- the peak RSS so far (ru_maxrss, what the comparison reports);
- the RSS now and its anonymous part (heap, Python objects, tensors) from /proc/self/smaps_rollup; the
  rest is file-backed, mostly pages of torch's shared libraries touched for the first time;
- the bytes glibc's malloc has handed out (mallinfo2).

Run (Linux, glibc): ``.venv/bin/python bench/memory_breakdown.py [--batch 2] [--T 64]``.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import sys


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def rss_kib() -> tuple[int, int]:
    """(resident, of which anonymous) KiB of this process, from /proc/self/smaps_rollup."""
    rss = anon = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Anonymous:"):
                anon = int(line.split()[1])
    return rss, anon


def _report(tag: str) -> None:
    """One line: peak RSS, RSS, anonymous RSS and malloc'd bytes, in MiB."""
    rss, anon = rss_kib()
    heap = _LIBC.mallinfo2().uordblks
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak {peak:6.1f}  rss {rss / 1024:6.1f}  anon {anon / 1024:6.1f}  file {(rss - anon) / 1024:6.1f}  "
          f"malloc {heap / 2**20:6.1f} MiB  {len(sys.modules):5d} modules  | {tag}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--T", type=int, default=64)
    args = ap.parse_args()
    _report("start")
    import torch

    _report("import torch")
    torch.set_num_threads(1)
    from seed_sizes import ACTIONS, STATE, build_ours

    from internal_rl import MetaController, Transformer  # noqa: F401  (the package's import, measured alone)

    _report("import internal_rl")
    B, T = args.batch, args.T
    model, mc = build_ours(max_len=max(T, 128))
    _report("build model and metacontroller")
    state, actions = torch.randn(B, T, STATE), torch.randint(0, ACTIONS, (B, T))
    with torch.no_grad():
        model(state, actions)
    _report("behaviour-cloning forward, no grad")
    model(state, actions)
    _report("behaviour-cloning forward, with grad")
    loss = sum(model(state, actions, meta_controller=mc, discovery_phase=True))
    _report("discovery forward")
    loss.backward()
    _report("discovery backward")
    cache, past, recs = None, None, []
    with torch.no_grad():
        for t in range(T):
            logits, cache = model(state[:, t:t + 1], past, meta_controller=mc, return_cache=True, cache=cache)
            m = cache.prev_hiddens.meta_controller
            recs.append((m.input_residual_stream, mc.log_prob(m.action_dist, m.actions), m.actions, m.switch_beta))
            past = torch.distributions.Categorical(logits=logits).sample()
    _report(f"cached rollout of {T} steps")
    states, old, z, betas = (torch.stack([r[i] for r in recs], 1) for i in range(4))
    mc.policy_loss(states, old, z, torch.randn(B), betas).backward()
    _report("policy_loss forward and backward")


if __name__ == "__main__":
    main()
