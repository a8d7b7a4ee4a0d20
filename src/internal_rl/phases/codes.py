"""Codes phase: the discovered subgoal codes, chained by the true subgoal on pretraining and post-training tasks.

Reads a discover run, takes the mean code at held-out switches per ground-truth subgoal
(analysis.code_chaining) and chains the codes through the option-level environment. Writes codes.json:
the codes, their counts and spreads, and success (with where episodes ended) on the pretraining tasks and
the post-training task. Compare with controllers.json: the ground-truth controllers are the same test for
controllers trained on the labels, with no rate penalty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from internal_rl.analysis.code_chaining import chain_codes, subgoal_codes
from internal_rl.data.trajectories import Trajectories
from internal_rl.envs.pinpad import POST_TRAINING_TASK
from internal_rl.models.sequence_model import freeze
from internal_rl.phases.common import resolve_device, set_seed, set_threads, write_json
from internal_rl.phases.discover import load_base, load_metacontroller


@dataclass
class CodesConfig:
    """Chaining the discovered codes (a diagnostic for internal RL's z-space; labels for analysis only)."""

    model: str = "runs/demo/pretrain"
    """Pretrained base (a co-trained discover run's own base is used instead when present)."""
    discover: str = "runs/demo/discover"
    data: str = "runs/demo/data"
    """Data folder holding D_star_heldout/ (where the codes are read)."""
    out: str = "runs/demo/codes"
    n_subgoals: int = 4
    code_episodes: int = 500
    """Held-out D* episodes to read the codes from."""
    eval_episodes: int = 512
    """Option-env episodes per task setting."""
    scales: list[float] = field(default_factory=lambda: [1.0])
    """Multiples of the codes to chain (1 = as learned; larger pushes the controller further)."""
    task: str = POST_TRAINING_TASK
    oracle_switch: bool = False
    """Read and chain the codes at the true subgoal boundaries instead of where β fires (analysis of a
    discover run made with --oracle-switch, whose switching unit is untrained; not the paper's method)."""
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu' or 'cuda[:N]'."""


def run_codes(cfg: CodesConfig) -> dict:
    """Read the subgoal codes and chain them; write codes.json."""
    if cfg.code_episodes < 1 or cfg.eval_episodes < 1:
        raise ValueError(f"code_episodes and eval_episodes must be >= 1, got {cfg.code_episodes}, {cfg.eval_episodes}")
    set_threads(cfg.threads)
    set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model = freeze(load_base(cfg.discover, cfg.model)).to(device).eval()
    mc, layer = load_metacontroller(cfg.discover)
    mc = mc.to(device).eval()
    heldout = Trajectories.load(Path(cfg.data) / "D_star_heldout")
    batch = heldout.batch(np.arange(min(cfg.code_episodes, len(heldout))), device)
    found = subgoal_codes(model, mc, layer, batch, cfg.n_subgoals, cfg.oracle_switch)
    res: dict = {"discover": cfg.discover, "layer": layer, "task": cfg.task, "oracle_switch": cfg.oracle_switch,
                 **{k: np.asarray(v).tolist() for k, v in found.items()}, "chaining": []}
    missing = [k for k in range(cfg.n_subgoals) if found["counts"][k] == 0]
    if missing:  # chaining needs a code for every subgoal; say so rather than fail
        res["chaining_skipped"] = f"no held-out switch to subgoal(s) {missing}, so they have no code"
        print(f"[codes] {res['chaining_skipped']}; chaining skipped", flush=True)
    for scale in [] if missing else cfg.scales:
        for name, task in (("pretraining", None), ("post", cfg.task)):
            r = chain_codes(model, mc, layer, found["codes"], task, cfg.eval_episodes, cfg.seed, scale, cfg.oracle_switch)
            res["chaining"].append({"scale": scale, "tasks": name, **r})
            print(f"[codes] scale {scale:g}, {name} tasks: success {r['success']:.3f} "
                  f"({r['decisions_per_episode']:.2f} decisions per episode)", flush=True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "codes.json", res)
    return res

