"""The switching unit's recurrence over a whole sequence, with a hand-written backward pass.

The switching gate β_t = σ(f_switch(e_t, h_{t−1}, z_{t−1})) reads the previous code, so discovery must
step through time. f_switch is a one-hidden-layer MLP whose first layer reads z_{t−1} only through
y_{t−1} = W_z z_{t−1}, and y obeys the same recurrence as z:

    a_t = pre_t + y_{t−1}          pre_t = W_e e_t + W_h h_{t−1} + b   (all t at once, outside)
    l_t = w_out · relu(a_t) + b_out
    β_t = relax(l_t)               soft σ(l), hard 1[σ(l) ≥ threshold] (straight-through), Gumbel σ((l + n)/τ)
    y_t = y_{t−1} + β_t (ỹ_t − y_{t−1})   ỹ_t = W_z z̃_t (all t at once, outside)

with β_1 = 1, y_1 = ỹ_1. Under autograd this loop records about a dozen graph nodes per step, and at
small batches their bookkeeping costs more than the arithmetic; `switch_recurrence` runs the forward loop
without a graph and the reverse loop by hand (a few fused ops per step, the rest vectorised over T).
tests/test_switching.py checks values and gradients against the plain autograd loop in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["relax_value", "switch_recurrence"]


def relax_value(logit: Tensor, mode: str, tau: float, threshold: float,
                noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(β, p): β from the switch logit under ``mode``, and the sigmoid p whose slope its gradient uses.

    soft: β = p = σ(l); hard: β = 1[σ(l) ≥ threshold], p = σ(l) (the straight-through surrogate);
    gumbel: β = p = σ((l + noise) / τ). The one definition for the loop below and for MetaController.
    """
    if mode == "gumbel":
        p = torch.sigmoid((logit if noise is None else logit + noise) / tau)
        return p, p
    p = torch.sigmoid(logit)
    return ((p >= threshold).to(p.dtype) if mode == "hard" else p), p


class _SwitchRecurrence(torch.autograd.Function):
    """Forward: the loop without a graph, keeping a_t and σ(l_t). Backward: the reverse loop carries only
    ∂L/∂y (about five ops per step on (B, H) tensors); everything else is one vectorised op over T."""

    @staticmethod
    def forward(ctx, pre: Tensor, y_tilde: Tensor, w_out: Tensor, b_out: Tensor, noise: Tensor | None,
                mode: str, tau: float, threshold: float) -> Tensor:
        ones = torch.ones_like(pre[:, 0, 0])
        pre_t, y_tilde_t = pre.unbind(1), y_tilde.unbind(1)
        noise_t = noise.unbind(1) if noise is not None and mode == "gumbel" else None
        y = y_tilde_t[0]
        ys, acts, probs, betas = [y], [torch.zeros_like(y)], [ones], [ones]
        for t in range(1, pre.shape[1]):
            a = pre_t[t] + y
            logit = torch.addmv(b_out, F.relu(a), w_out)
            b, p = relax_value(logit, mode, tau, threshold, None if noise_t is None else noise_t[t])
            y = torch.lerp(y, y_tilde_t[t], b[:, None])
            ys.append(y)
            acts.append(a)
            probs.append(p)
            betas.append(b)
        beta, prob = torch.stack(betas, dim=1), torch.stack(probs, dim=1)
        dbeta = prob * (1.0 - prob)  # ∂β/∂l: σ' (straight-through for hard); Gumbel divides by τ below
        if mode == "gumbel":
            dbeta = dbeta / tau
        dbeta[:, 0] = 0.0  # β_1 = 1 is forced
        ctx.save_for_backward(y_tilde, w_out, torch.stack(ys, dim=1), torch.stack(acts, dim=1), beta, dbeta)
        return beta

    @staticmethod
    def backward(ctx, g_beta: Tensor):
        y_tilde, w_out, ys, acts, beta, dbeta = ctx.saved_tensors
        active = acts > 0  # relu's gate (row 0 is zeros: inactive)
        gate_w = active.to(w_out.dtype) * w_out  # ∂l/∂a, (B, T, H)
        diff = torch.zeros_like(y_tilde)
        diff[:, 1:] = y_tilde[:, 1:] - ys[:, :-1]  # ∂y_t/∂β_t = ỹ_t − y_{t−1}
        direct = g_beta * dbeta  # ∂L/∂l_t through β_t's direct use
        diff_t, dbeta_t, direct_t = diff.unbind(1), dbeta.unbind(1), direct.unbind(1)
        keep_t, gate_t = (1.0 - beta)[:, :, None].unbind(1), gate_w.unbind(1)
        gy = torch.zeros_like(ys[:, 0])  # ∂L/∂y_t through later steps (none after T)
        g_ys, g_logits = [], []
        for t in range(beta.shape[1] - 1, 0, -1):
            g_ys.append(gy)
            gl = torch.addcmul(direct_t[t], torch.linalg.vecdot(gy, diff_t[t]), dbeta_t[t])
            g_logits.append(gl)
            gy = torch.addcmul(gy * keep_t[t], gl[:, None], gate_t[t])
        g_ys.append(gy)
        g_y = torch.stack(g_ys[::-1], dim=1)
        g_logit = F.pad(torch.stack(g_logits[::-1], dim=1), (1, 0)) if g_logits else torch.zeros_like(beta)
        g_pre = g_logit[:, :, None] * gate_w
        g_y_tilde = g_y * beta[:, :, None]  # β_1 = 1 passes all of ∂L/∂y_1 to ỹ_1
        g_w_out = torch.einsum("bt,bth->h", g_logit, F.relu(acts))
        return g_pre, g_y_tilde, g_w_out, g_logit.sum(), None, None, None, None


def switch_recurrence(pre: Tensor, y_tilde: Tensor, w_out: Tensor, b_out: Tensor, noise: Tensor | None = None,
                      mode: str = "soft", tau: float = 1.0, threshold: float = 0.5) -> Tensor:
    """β (B, T) of the switching recurrence above, differentiable in pre, ỹ (both (B, T, H)), w_out (H,), b_out ().

    ``noise`` (B, T): logistic noise added to the logit in "gumbel" mode (None: no noise).
    """
    if pre.dim() != 3 or pre.shape != y_tilde.shape:
        raise ValueError(f"pre and y_tilde must both be (B, T, H), got {tuple(pre.shape)} and {tuple(y_tilde.shape)}")
    if w_out.shape != pre.shape[-1:] or b_out.dim() != 0:
        raise ValueError(f"w_out must be (H,) = ({pre.shape[-1]},) and b_out a scalar, "
                         f"got {tuple(w_out.shape)} and {tuple(b_out.shape)}")
    if mode not in ("soft", "hard", "gumbel"):
        raise ValueError(f"mode must be 'soft', 'hard' or 'gumbel', got {mode!r}")
    if noise is not None and noise.shape != pre.shape[:2]:
        raise ValueError(f"noise must be (B, T) = {tuple(pre.shape[:2])}, got {tuple(noise.shape)}")
    return _SwitchRecurrence.apply(pre, y_tilde, w_out, b_out, noise, mode, float(tau), float(threshold))
