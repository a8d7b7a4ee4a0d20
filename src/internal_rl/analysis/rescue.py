"""Does z-space hold a code that saves the episodes a trained internal-RL policy loses?

With argmax primitive actions (τ = 0) and z = the policy's mean, an episode of the option-level env is a
deterministic function of its layout. So: G layouts, each copied into a group of M rows (the env's
``group_size``). Pass 1: every row follows the policy's mean; the rows of a group must agree (checked and
reported). Pass 2: at the last decision of the group's reference episode (the option during which it ended),
rows 1..M−1 take a candidate z instead of the mean, then follow the mean again; row 0 repeats the reference.
A failed layout is *rescued* when some candidate finishes the task, *crossed* when some candidate gets past
the reference's last correct colour; ``candidate_rows_changed`` is the share of candidate rows whose episode
ended differently from the reference (steps, progress or success) at all.

Many rescued layouts mean the frozen base, steered by some code, solves them and the RL policy does not find
or express that code (an RL limit); few mean no code the decoder can write saves them (the base's). An
analysis on top of a trained ``internal-rl rl`` run, not a method: the paper samples primitive actions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from internal_rl.control.metacontroller import MetaController
from internal_rl.models.sequence_model import SequenceModel
from internal_rl.rl.option_env import OptionCore
from internal_rl.rl.policy import LatentPolicy


@dataclass(frozen=True)
class Candidate:
    """How a candidate row draws its z at the rescued decision, with ε ~ N(0, I):
    ``policy``: z = mean + scale·σ·ε (around the policy's own Gaussian); ``prior``: z = scale·ε."""

    kind: str
    scale: float

    @property
    def label(self) -> str:
        return f"{self.kind}_x{self.scale:g}"


DEFAULT_CANDIDATES = (Candidate("prior", 1.0), Candidate("policy", 1.0), Candidate("policy", 2.0),
                      Candidate("policy", 4.0))


def parse_candidates(specs: list[str]) -> tuple[Candidate, ...]:
    """``["prior:1", "policy:2", ...]`` → candidates; a clear error for anything else."""
    out = []
    for spec in specs:
        kind, _, scale = spec.partition(":")
        if kind not in ("prior", "policy"):
            raise ValueError(f"candidate {spec!r}: the kind must be 'prior' or 'policy' (as in policy:2)")
        try:
            s = float(scale) if scale else 1.0
        except ValueError:
            raise ValueError(f"candidate {spec!r}: the scale after ':' must be a number") from None
        if not s >= 0:
            raise ValueError(f"candidate {spec!r}: the scale must be >= 0")
        out.append(Candidate(kind, s))
    if not out:
        raise ValueError("give at least one candidate (e.g. policy:2)")
    return tuple(out)


@torch.no_grad()
def _run(core: OptionCore, policy: LatentPolicy, seed: int, at: np.ndarray | None = None,
         z_of: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
         desc: str | None = None) -> dict[str, np.ndarray]:
    """Every episode to its end with z = the policy's mean, except rows whose decision index equals ``at``
    (−1: never), which take ``z_of(rows, mean, logstd)``. Returns success, progress and decisions per row.
    ``desc``: show a progress bar of that name over the primitive steps (up to the env's T)."""
    bar = tqdm(total=core.env.config.max_steps, desc=desc, unit="step", disable=desc is None, dynamic_ncols=True)
    core.reset(seed)
    n = core.n
    state = policy.initial_state(n)
    decisions = torch.zeros(n, dtype=torch.long)
    z = torch.zeros(n, policy.n_z)
    need = core.need.clone()
    rows = torch.arange(n)
    at_t = None if at is None else torch.from_numpy(at)
    while not bool(core.done.all()):
        if bool(need.any()):
            r = rows[need]
            mean, logstd, new = policy.step_rows(core.e.float(), state, r)
            for s, ns in zip(state, new):
                for t, nt in zip(s, ns):
                    t[r] = nt
            zr = mean.clone()
            if at_t is not None:
                hit = decisions[r] == at_t[r]
                if bool(hit.any()):
                    zr[hit] = z_of(r[hit], mean[hit], logstd[hit])
            decisions[r] += 1
            z[r] = zr
        _, _, need = core.advance(z, need)
        bar.update(int(core.env.step_count.max()) - bar.n)
    bar.close()
    return {"success": np.asarray(core.env.success).copy(), "progress": np.asarray(core.env.progress).copy(),
            "steps": np.asarray(core.env.step_count).copy(), "decisions": decisions.numpy()}


def rescue_failed_layouts(model: SequenceModel, mc: MetaController, layer: int, policy: LatentPolicy, task: str,
                          groups: int = 512, group_size: int = 32, seed: int = 0,
                          candidates: tuple[Candidate, ...] = DEFAULT_CANDIDATES,
                          beta_threshold: float | None = None, progress: bool = False) -> dict:
    """The rescue analysis over ``groups`` fresh layouts (see the module docstring); rows 1..group_size−1 of
    each group cycle through ``candidates``. Returns a JSON-able dict of the figures. ``progress``: a bar per
    pass."""
    if groups < 1 or group_size < 2:
        raise ValueError(f"need groups >= 1 and group_size >= 2 (row 0 is the reference), got {groups}, {group_size}")
    n = groups * group_size
    policy = policy.eval()

    def core() -> OptionCore:
        return OptionCore(model, mc, layer, n, task, seed=seed, action_temperature=0.0, group_size=group_size,
                          beta_threshold=beta_threshold)

    ref = _run(core(), policy, seed, desc="rescue 1/2 (reference)" if progress else None)
    succ = ref["success"].reshape(groups, group_size)
    prog = ref["progress"].reshape(groups, group_size)
    consistent = (succ == succ[:, :1]).all(1) & (prog == prog[:, :1]).all(1)
    ref_succ, ref_prog = succ[:, 0], prog[:, 0]
    last = ref["decisions"].reshape(groups, group_size)[:, 0] - 1  # the option during which the reference ended

    col = np.arange(n) % group_size
    kind = np.where(col == 0, -1, (col - 1) % len(candidates))  # −1: the reference row
    noise = torch.randn(n, policy.n_z, generator=torch.Generator().manual_seed(seed + 1))
    scale = torch.tensor([candidates[k].scale if k >= 0 else 0.0 for k in kind])
    around_policy = torch.tensor([k >= 0 and candidates[k].kind == "policy" for k in kind])

    def z_of(r: torch.Tensor, mean: torch.Tensor, logstd: torch.Tensor) -> torch.Tensor:
        eps = noise[r] * scale[r, None]
        return torch.where(around_policy[r, None], mean + logstd.exp() * eps, eps)

    at = np.where(kind >= 0, np.repeat(last, group_size), -1)
    alt = _run(core(), policy, seed, at, z_of, desc="rescue 2/2 (candidates)" if progress else None)
    s2 = alt["success"].reshape(groups, group_size)
    p2 = alt["progress"].reshape(groups, group_size)
    n2 = alt["steps"].reshape(groups, group_size)
    changed = (p2[:, 1:] != p2[:, :1]) | (n2[:, 1:] != n2[:, :1]) | (s2[:, 1:] != s2[:, :1])
    failed = ~ref_succ
    kinds = kind[:group_size]
    res: dict = {
        "groups": groups, "group_size": group_size, "seed": seed, "task": task,
        "candidates": [c.label for c in candidates],
        "groups_consistent": float(consistent.mean()),
        "reference_success": float(ref_succ.mean()),
        "reference_success_pass2": float(s2[:, 0].mean()),
        "failed_layouts": int(failed.sum()),
        "candidate_rows_changed": float(changed.mean()),
        "reference_fail_progress_hist": np.bincount(ref_prog[failed], minlength=len(task.split("-")) + 1).tolist(),
    }
    if failed.any():
        res["rescued"] = float(s2[failed, 1:].any(1).mean())
        res["crossed"] = float((p2[failed, 1:] > ref_prog[failed, None]).any(1).mean())
        res["success_with_rescue"] = float(ref_succ.mean() + failed.mean() * res["rescued"])
        res["by_candidate"] = {
            c.label: {"rescued": float(s2[failed][:, kinds == i].any(1).mean()),
                      "row_success": float(s2[failed][:, kinds == i].mean())}
            for i, c in enumerate(candidates) if (kinds == i).any()}
        res["rescued_by_fail_progress"] = {int(p): float(s2[failed & (ref_prog == p), 1:].any(1).mean())
                                           for p in np.unique(ref_prog[failed])}
    else:
        res.update(rescued=None, crossed=None, success_with_rescue=float(ref_succ.mean()), by_candidate={},
                   rescued_by_fail_progress={})
    return res
