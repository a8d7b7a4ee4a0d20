"""One step of the discovery objective (paper Eq. 3) on a batch of demonstrations.

    Σ_t [ −log p_{θ,φ}(a_t | o_1..t, z_1..t) + α · KL(N(μ_t, Σ_t) ‖ N(0, I)) ]

Shared by the `discover` phase, the code-chaining analysis and the benchmarks, so it lives below them.
"""

from __future__ import annotations

import torch

from internal_rl.control.metacontroller import MetaController, discovery_loss
from internal_rl.models.sequence_model import SequenceModel, prev_actions_of


def oracle_schedule(batch: dict) -> torch.Tensor:
    """β at ground-truth subgoal boundaries: 1 where the label changes (and at t = 1), else 0; (B, T)."""
    sg, mask = batch["subgoals"], batch["mask"]
    beta = torch.zeros(sg.shape, dtype=torch.float32, device=sg.device)
    beta[:, 1:] = ((sg[:, 1:] != sg[:, :-1]) & mask[:, 1:]).float()
    beta[:, 0] = 1.0
    return beta


def discovery_step(model: SequenceModel, mc: MetaController, batch: dict, layer: int, alpha: float,
                   frozen: bool = True, sample: bool = True, force_switch: bool = False, switch_weight: float = 0.0,
                   oracle_switch: bool = False):
    """Loss of one batch; with a frozen base only the controlled activations carry a graph."""
    T = batch["actions"].shape[1]
    pa = prev_actions_of(batch["actions"]) if model.prev_action is not None else None
    if frozen:
        with torch.no_grad():
            e = model.lower(batch["obs"][:, :T], pa, layer)
    else:
        e = model.lower(batch["obs"][:, :T], pa, layer)
    schedule = oracle_schedule(batch) if oracle_switch and not force_switch else None
    out = mc(e, batch["mask"], sample=sample, force_switch=force_switch, switch_schedule=schedule)
    logp = model.action_logp(model.upper(out.e_hat, layer), batch["actions"])
    losses = discovery_loss(logp, out, batch["mask"], alpha)
    if switch_weight > 0:
        later = batch["mask"][:, 1:]
        rate = (out.beta[:, 1:] * later).sum() / later.sum().clamp(min=1)
        losses["loss"] = losses["loss"] + switch_weight * rate
    return losses, out
