"""Residual-stream controllers: ê = e + U e (paper §3, "controllability", LoRA-inspired).

e is the residual stream of the frozen base model at the control layer, (..., D) with D = d_model.
U is the controller: low-rank U = B Aᵀ with A, B of shape (..., D, r), or a full (..., D, D) matrix.
The low-rank case is always applied as B (Aᵀ e), so no D×D matrix is ever formed.
The hypernetwork ``HyperDecoder`` maps a latent code z to U (paper D.2, decoder f_hyp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["ControlParams", "HyperDecoder", "apply_full", "apply_low_rank"]


def apply_low_rank(e: Tensor, A: Tensor, B: Tensor) -> Tensor:
    """Return e + B (Aᵀ e) for e (..., D) and A, B (..., D, r), broadcasting leading dims.

    Costs O(D r) per vector: the product B Aᵀ is never materialised.
    """
    if A.shape != B.shape or A.dim() < 2:
        raise ValueError(f"A and B must both be (..., D, r), got {tuple(A.shape)} and {tuple(B.shape)}")
    if e.shape[-1] != A.shape[-2]:
        raise ValueError(f"e has width {e.shape[-1]} but A, B are (..., {A.shape[-2]}, r)")
    coef = torch.matmul(e.unsqueeze(-2), A)  # (..., 1, r) = (Aᵀ e)ᵀ
    return e + torch.matmul(coef, B.transpose(-1, -2)).squeeze(-2)  # (Aᵀe)ᵀ Bᵀ = (B Aᵀ e)ᵀ


def apply_full(e: Tensor, U: Tensor) -> Tensor:
    """Return e + U e for e (..., D) and U (..., D, D), broadcasting leading dims."""
    if U.dim() < 2 or U.shape[-1] != U.shape[-2]:
        raise ValueError(f"U must be (..., D, D), got {tuple(U.shape)}")
    if e.shape[-1] != U.shape[-1]:
        raise ValueError(f"e has width {e.shape[-1]} but U is (..., {U.shape[-2]}, {U.shape[-1]})")
    return e + torch.matmul(e.unsqueeze(-2), U.transpose(-1, -2)).squeeze(-2)


@dataclass
class ControlParams:
    """The controller U for each position: low-rank factors A, B (..., D, r) or a full U (..., D, D)."""

    A: Tensor | None = None
    """Low-rank input factor, (..., D, r); U = B Aᵀ."""
    B: Tensor | None = None
    """Low-rank output factor, (..., D, r)."""
    U: Tensor | None = None
    """Full-rank matrix (..., D, D), used instead of A, B when the decoder is full rank."""

    def __post_init__(self) -> None:
        low_rank = self.A is not None and self.B is not None and self.U is None
        full = self.U is not None and self.A is None and self.B is None
        if not (low_rank or full):
            raise ValueError("ControlParams needs either both A and B (low rank) or U (full rank), not a mix")

    @property
    def full_rank(self) -> bool:
        """True when U is a full (D, D) matrix."""
        return self.U is not None

    def apply(self, e: Tensor) -> Tensor:
        """Controlled residual ê = e + U e."""
        if self.U is not None:
            return apply_full(e, self.U)
        return apply_low_rank(e, self.A, self.B)

    def __getitem__(self, index: Any) -> ControlParams:
        """Index the leading (batch/time) dims, e.g. ``params[:, t]`` for step t of (B, T, ...) params."""
        if self.U is not None:
            return ControlParams(U=self.U[index])
        return ControlParams(A=self.A[index], B=self.B[index])

    def detach(self) -> ControlParams:
        """A copy cut from the autograd graph."""
        if self.U is not None:
            return ControlParams(U=self.U.detach())
        return ControlParams(A=self.A.detach(), B=self.B.detach())


class HyperDecoder(nn.Module):
    """Hypernetwork f_hyp: latent code z (..., n_in) -> controller U (paper D.2, MLP with one hidden layer).

    Low rank: outputs A, B (..., D, r); full rank: U (..., D, D). The output layer starts small
    (B or U scaled by ``init_scale``), so U e ≈ 0 and the controlled model starts as the base model.
    """

    def __init__(
        self,
        n_in: int,
        d_model: int,
        hidden: int = 32,
        rank: int = 16,
        full_rank: bool = False,
        init_scale: float = 1e-2,
    ) -> None:
        super().__init__()
        if min(n_in, d_model, hidden, rank) < 1:
            raise ValueError("n_in, d_model, hidden and rank must be positive")
        self.n_in, self.d_model, self.rank, self.full_rank = n_in, d_model, rank, full_rank
        self.hidden = nn.Linear(n_in, hidden)
        if full_rank:
            self.out_u = nn.Linear(hidden, d_model * d_model)
            nn.init.normal_(self.out_u.weight, std=init_scale / math.sqrt(hidden * d_model))
            nn.init.zeros_(self.out_u.bias)
        else:
            # A reads e (entries ~ 1/sqrt(D) so Aᵀe has the scale of e); B writes back, and starts small.
            self.out_a = nn.Linear(hidden, d_model * rank)
            self.out_b = nn.Linear(hidden, d_model * rank)
            nn.init.normal_(self.out_a.weight, std=1.0 / math.sqrt(hidden * d_model))
            nn.init.zeros_(self.out_a.bias)
            nn.init.normal_(self.out_b.weight, std=init_scale / math.sqrt(hidden * rank))
            nn.init.zeros_(self.out_b.bias)

    def forward(self, z: Tensor) -> ControlParams:
        """Controller parameters for codes z (..., n_in): A, B (..., D, r) or U (..., D, D)."""
        if z.shape[-1] != self.n_in:
            raise ValueError(f"HyperDecoder expects z of shape (..., {self.n_in}), got {tuple(z.shape)}")
        hdn = F.relu(self.hidden(z))
        if self.full_rank:
            return ControlParams(U=rearrange(self.out_u(hdn), "... (i j) -> ... i j", i=self.d_model))
        A = rearrange(self.out_a(hdn), "... (d r) -> ... d r", r=self.rank)
        B = rearrange(self.out_b(hdn), "... (d r) -> ... d r", r=self.rank)
        return ControlParams(A=A, B=B)

    def control(self, e: Tensor, z: Tensor) -> Tensor:
        """ê = e + U(z) e for e (..., D), z (..., n_in), equal to ``apply(e, forward(z))`` but cheaper.

        U's per-step parameters (A, B or U, the largest tensors by far) are never materialised: the
        output layer is contracted with e first, so per step only r·hidden (low rank) or D·hidden
        (full rank) numbers are formed instead of 2·D·r or D².
        """
        if z.shape[-1] != self.n_in:
            raise ValueError(f"HyperDecoder expects z of shape (..., {self.n_in}), got {tuple(z.shape)}")
        if e.shape[-1] != self.d_model:
            raise ValueError(f"e must have width d_model={self.d_model}, got {tuple(e.shape)}")
        hdn = F.relu(self.hidden(z))  # (..., H)
        D = self.d_model
        if self.full_rank:
            # (U e)_i = Σ_{k,j} W[(i k), j] e_k hdn_j + Σ_k b[(i k)] e_k
            outer = rearrange(e.unsqueeze(-1) * hdn.unsqueeze(-2), "... k j -> ... (k j)")
            w = rearrange(self.out_u.weight, "(i k) j -> i (k j)", i=D)
            return e + F.linear(outer, w) + F.linear(e, self.out_u.bias.view(D, D))
        r = self.rank
        # (Aᵀe)_r = Σ_j hdn_j Σ_d W_A[(d r), j] e_d + Σ_d b_A[(d r)] e_d
        w_a = rearrange(self.out_a.weight, "(d r) j -> (r j) d", r=r)
        m = rearrange(F.linear(e, w_a), "... (r j) -> ... r j", r=r)
        coef = torch.matmul(m, hdn.unsqueeze(-1)).squeeze(-1) + F.linear(e, self.out_a.bias.view(D, r).T)
        # (B c)_d = Σ_{r,j} W_B[(d r), j] c_r hdn_j + Σ_r b_B[(d r)] c_r
        outer = rearrange(coef.unsqueeze(-1) * hdn.unsqueeze(-2), "... r j -> ... (r j)")
        w_b = rearrange(self.out_b.weight, "(d r) j -> d (r j)", r=r)
        return e + F.linear(outer, w_b) + F.linear(coef, self.out_b.bias.view(D, r))

    def apply(self, e: Tensor, params: ControlParams | None = None) -> Tensor:  # type: ignore[override]
        """Controlled residual ê = e + U e for e (..., D).

        ``apply(fn)`` with a callable keeps nn.Module.apply's meaning (``model.apply(init_fn)`` works).
        """
        if params is None and callable(e):
            return super().apply(e)
        if params is None:
            raise ValueError("HyperDecoder.apply(e, params) needs the ControlParams from forward(z)")
        if e.shape[-1] != self.d_model:
            raise ValueError(f"e must have width d_model={self.d_model}, got {tuple(e.shape)}")
        return params.apply(e)
