"""The history GRU h_t = GRU(e_t, h_{t−1}) over a whole sequence, with a hand-written backward pass.

With PyTorch's GRU convention (gates r, u, n; weights stacked in that order):

    r_t = σ(W_ir e_t + b_ir + W_hr h_{t−1} + b_hr)      u_t = σ(W_iu e_t + b_iu + W_hu h_{t−1} + b_hu)
    n_t = tanh(W_in e_t + b_in + r_t ⊙ (W_hn h_{t−1} + b_hn))
    h_t = (1 − u_t) ⊙ n_t + u_t ⊙ h_{t−1},   h_0 = 0.

Under autograd ``nn.GRU`` records about a dozen graph nodes per step, and at discovery's small batches
their bookkeeping costs more than the arithmetic. Here the forward runs the GRU without a graph (torch's
own kernel) and the backward recomputes every gate for all t at once from the saved h (two matrix
products), so the only sequential part left is ∂L/∂h_t = ∂L/∂h_t|direct + ∂L/∂h_{t+1} ∂h_{t+1}/∂h_t,
four small ops per step. tests/test_history.py checks values and gradients against these equations written
as a loop and against ``nn.GRU``, in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HAND_BACKWARD_MAX_BATCH", "gru_sequence"]

HAND_BACKWARD_MAX_BATCH = 16
"""Largest batch that takes the hand-written backward (bench/bench_history_gru.py measures the crossover)."""


class _GRUSequence(torch.autograd.Function):
    """Forward: the module's GRU under no_grad. Backward: gates recomputed in parallel over T, then the
    reverse recurrence of ∂L/∂h, then every weight gradient in one product over all steps."""

    @staticmethod
    def forward(ctx, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor, gru: nn.GRU) -> Tensor:
        h, _ = gru(x)  # weights are w_ih, w_hh, b_ih, b_hh themselves
        ctx.save_for_backward(x, w_ih, w_hh, b_ih, b_hh, h)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out: Tensor):
        x, w_ih, w_hh, b_ih, b_hh, h = ctx.saved_tensors
        n_h = h.shape[-1]
        h_prev = F.pad(h[:, :-1], (0, 0, 1, 0))  # h_{t−1}, h_0 = 0
        gi = F.linear(x, w_ih, b_ih)  # (B, T, 3H)
        gh = F.linear(h_prev, w_hh, b_hh)
        i_r, i_u, i_n = gi.split(n_h, dim=-1)
        h_r, h_u, h_n = gh.split(n_h, dim=-1)
        r, u = torch.sigmoid(i_r + h_r), torch.sigmoid(i_u + h_u)
        n = torch.tanh(i_n + r * h_n)
        # ∂h_t/∂(pre-activation) of each gate, per unit: P for the input side, Q for the hidden side.
        p_n = (1.0 - u) * (1.0 - n * n)
        p_u = (h_prev - n) * u * (1.0 - u)
        p_r = p_n * h_n * r * (1.0 - r)
        p = torch.cat([p_r, p_u, p_n], dim=-1)  # (B, T, 3H)
        q = torch.cat([p_r, p_u, p_n * r], dim=-1)
        # reverse recurrence: g_t = ∂L/∂h_t = (direct) + g_{t+1} ∂h_{t+1}/∂h_t, where
        # g ∂h_t/∂h_{t−1} = g ⊙ u_t + (g ⊙ q_t per gate) W_hh: an addcmul and an addmm per step
        g_direct, u_t, q_t = g_out.unbind(1), u.unbind(1), q.unbind(1)
        g_t = g_direct[-1]
        gs = [g_t]
        for t in range(h.shape[1] - 2, -1, -1):
            g_t = torch.addmm(torch.addcmul(g_direct[t], g_t, u_t[t + 1]), g_t.repeat(1, 3) * q_t[t + 1], w_hh)
            gs.append(g_t)
        g = torch.stack(gs[::-1], dim=1)  # (B, T, H)
        g3 = g.repeat(1, 1, 3)
        d_gi, d_gh = g3 * p, g3 * q
        need = ctx.needs_input_grad
        g_x = F.linear(d_gi, w_ih.t()) if need[0] else None
        g_w_ih = torch.einsum("btg,btd->gd", d_gi, x) if need[1] else None
        g_w_hh = torch.einsum("btg,bth->gh", d_gh, h_prev) if need[2] else None
        g_b_ih = d_gi.sum(dim=(0, 1)) if need[3] else None
        g_b_hh = d_gh.sum(dim=(0, 1)) if need[4] else None
        return g_x, g_w_ih, g_w_hh, g_b_ih, g_b_hh, None


def gru_sequence(gru: nn.GRU, x: Tensor) -> Tensor:
    """All histories h_1..h_T (B, T, H) of a one-layer, batch-first ``nn.GRU`` over x (B, T, D), from h_0 = 0.

    The same values as ``gru(x)[0]``; differentiable in x and the GRU's weights. Batches of at most
    ``HAND_BACKWARD_MAX_BATCH`` rows use the hand-written backward (forward + backward 1.7–2.6× faster at
    2–8 rows, 1.2–1.5× at 16; ``bench/bench_history_gru.py``); larger ones use autograd through
    ``nn.GRU``, whose per-step ops no longer dominate there and whose backward touches less memory (the
    hand-written one is slower from 32 rows at T = 256 and 64 rows at T = 64).
    """
    if not (gru.batch_first and gru.num_layers == 1 and not gru.bidirectional and gru.bias):
        raise ValueError("gru_sequence needs a one-layer, unidirectional, batch-first nn.GRU with biases")
    if x.dim() != 3 or x.shape[-1] != gru.input_size:
        raise ValueError(f"x must be (B, T, {gru.input_size}), got {tuple(x.shape)}")
    weights = (gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    if x.shape[0] > HAND_BACKWARD_MAX_BATCH or not torch.is_grad_enabled() or not (
        x.requires_grad or any(w.requires_grad for w in weights)
    ):
        return gru(x)[0]
    return _GRUSequence.apply(x, *weights, gru)
