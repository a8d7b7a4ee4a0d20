"""Hawk: the recurrent model of Griffin (De et al. 2024, "Griffin: Mixing Gated Linear Recurrences...").

Hawk is a stack of pre-norm residual blocks, each a *recurrent mixer* (GeLU gate branch times a
causal conv1d -> RG-LRU branch) followed by a ReLU MLP. It is the ant base model of the paper and
the non-causal sequence embedder of the metacontroller (``bidirectional=True``).

Every module runs two ways that give the same numbers (tests enforce it):
- ``forward(x (B, T, D), mask=None) -> y (B, T, D)``: whole sequences (training);
- ``step(x_t (B, D), state) -> (y_t, state)`` from ``initial_state(batch)``: one step (rollouts).

Padding masks are (B, T) bool, True = valid, padding only at the end of each row.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "RGLRU",
    "BlockDiagonalLinear",
    "Hawk",
    "HawkBlock",
    "HawkBlockState",
    "check_padding_mask",
    "linear_scan",
]


def check_padding_mask(mask: Tensor | None, batch: int, length: int) -> Tensor | None:
    """Validate a (B, T) bool padding mask (True = valid, padding only at the end) and return it.

    Raises ValueError with a readable message for a wrong shape, dtype, or padding in the middle.
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a bool tensor (True = valid step), got {getattr(mask, 'dtype', type(mask))}"
        )
    if mask.shape != (batch, length):
        raise ValueError(f"mask must have shape (B, T) = ({batch}, {length}), got {tuple(mask.shape)}")
    if length > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask must be True on a prefix of each row (padding only at the end)")
    return mask


def _prefix_scan(a: Tensor, b: Tensor) -> Tensor:
    """Hillis-Steele prefix scan of h_t = a_t h_{t-1} + b_t (h_0 = 0) along dim 1: log2 T vectorised steps."""
    # After the step with offset k, (a_t, b_t) summarises the recurrence over steps t-2k+1..t.
    # Shifting with zero padding (b) / one padding (a) leaves t < k unchanged without slicing + cat.
    length, k = a.shape[1], 1
    while k < length:
        b = b + a * F.pad(b[:, :-k], (0, 0, k, 0))
        if 2 * k < length:
            a = a * F.pad(a[:, :-k], (0, 0, k, 0), value=1.0)
        k *= 2
    return b


class _LinearScan(torch.autograd.Function):
    """The prefix scan with its adjoint as backward: ∂L/∂b_t = g_t + a_{t+1} ∂L/∂b_{t+1} is the same scan
    run backwards in time, and ∂L/∂a_t = ∂L/∂b_t · h_{t-1}. Autograd through the log2 T steps would record
    about ten ops per step and keep every step's tensors; this keeps a and h."""

    generate_vmap_rule = True  # torch.func.vmap (with gradients) sees through it

    @staticmethod
    def forward(a: Tensor, b: Tensor) -> Tensor:
        h = _prefix_scan(a, b)
        return h.clone() if h is b else h  # T = 1 returns b itself, which autograd cannot save as the output

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor]:
        a, h = ctx.saved_tensors
        a_next = F.pad(a[:, 1:], (0, 0, 0, 1))  # a_{t+1}, 0 after the last step
        g_b = _prefix_scan(a_next.flip(1), g.flip(1)).flip(1)
        if not ctx.needs_input_grad[0]:
            return None, g_b
        g_a = g_b * F.pad(h[:, :-1], (0, 0, 1, 0))  # h_{t-1}, h_0 = 0 (an h0 is folded into b_1)
        return g_a, g_b


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None, method: str = "parallel") -> Tensor:
    """All states of the linear recurrence h_t = a_t * h_{t-1} + b_t along dim 1 of (B, T, C) inputs.

    ``method="parallel"`` is a Hillis-Steele prefix scan (log2 T vectorised steps, numerically
    stable, no division) whose backward is the same scan in reverse time; ``"loop"`` is the plain python
    loop over T. Both give the same values and gradients.
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"a and b must both be (B, T, C), got {tuple(a.shape)} and {tuple(b.shape)}")
    if h0 is not None:
        b = torch.cat([b[:, :1] + a[:, :1] * h0.unsqueeze(1), b[:, 1:]], dim=1)
    length = a.shape[1]
    if method == "loop":
        h = b[:, 0]
        out = [h]
        for t in range(1, length):
            h = a[:, t] * h + b[:, t]
            out.append(h)
        return torch.stack(out, dim=1)
    if method != "parallel":
        raise ValueError(f"method must be 'parallel' or 'loop', got {method!r}")
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return _LinearScan.apply(a, b)
    return _prefix_scan(a, b)


class BlockDiagonalLinear(nn.Module):
    """Linear map with a block-diagonal weight (one dense block per head), as Griffin's RG-LRU gates."""

    def __init__(self, dim: int, heads: int = 1) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.dim, self.heads = dim, heads
        block = dim // heads
        bound = 1.0 / math.sqrt(block)
        self.weight = nn.Parameter(torch.empty(heads, block, block).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Apply each head's block to its slice of the last dim of x (..., dim)."""
        if self.heads == 1:  # one dense block: a plain matmul (the rollout hot path)
            return torch.matmul(x, self.weight[0]) + self.bias
        xh = rearrange(x, "... (h d) -> ... h d", h=self.heads)
        y = torch.einsum("...hd,hde->...he", xh, self.weight)
        return rearrange(y, "... h e -> ... (h e)") + self.bias


class RGLRU(nn.Module):
    """Real-Gated Linear Recurrent Unit (Griffin eq. 1-4), a diagonal recurrence with input-dependent decay.

    r_t = σ(W_a x_t), i_t = σ(W_x x_t), a_t = a^{c r_t} with a = σ(Λ) and c = 8,
    h_t = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ x_t); the output is h_t.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 1,
        c: float = 8.0,
        a_min: float = 0.9,
        a_max: float = 0.999,
        scan: str = "parallel",
    ) -> None:
        super().__init__()
        self.dim, self.c, self.scan = dim, c, scan
        self.recurrence_gate = BlockDiagonalLinear(dim, heads)  # W_a
        self.input_gate = BlockDiagonalLinear(dim, heads)  # W_x
        # Λ initialised so that a^c is uniform in [a_min, a_max] (Griffin's init).
        a = torch.empty(dim).uniform_(a_min, a_max) ** (1.0 / c)
        self.log_a_logit = nn.Parameter(torch.log(a) - torch.log1p(-a))  # Λ

    def _coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Decay a_t and input term sqrt(1 - a_t²)·i_t·x_t, for any leading shape."""
        r = torch.sigmoid(self.recurrence_gate(x))
        i = torch.sigmoid(self.input_gate(x))
        log_a = -self.c * r * F.softplus(-self.log_a_logit)  # c·r·log σ(Λ), computed stably
        a = torch.exp(log_a)
        scale = torch.sqrt((-torch.expm1(2.0 * log_a)).clamp_min(1e-12))
        return a, scale * (i * x)

    def forward(self, x: Tensor, h0: Tensor | None = None) -> Tensor:
        """All hidden states h_1..h_T (B, T, dim) for inputs x (B, T, dim), starting from h0 (default 0)."""
        a, b = self._coefficients(x)
        return linear_scan(a, b, h0, method=self.scan)

    def initial_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Zero hidden state h_0 (batch, dim)."""
        p = self.log_a_logit
        return torch.zeros(batch, self.dim, device=device or p.device, dtype=dtype or p.dtype)

    def step(self, x_t: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """One recurrence step: returns (h_t, h_t) so that output and new state are the same tensor."""
        a, b = self._coefficients(x_t)
        h = a * h + b
        return h, h


class HawkBlockState(NamedTuple):
    """Recurrent state of one HawkBlock: the last (width-1) conv inputs and the RG-LRU state."""

    conv: Tensor  # (B, conv_width - 1, lru_dim), oldest first
    h: Tensor  # (B, lru_dim)


class HawkBlock(nn.Module):
    """One Hawk residual block: x + mixer(RMSNorm(x)), then x + MLP(RMSNorm(x)).

    mixer(u) = W_out( GeLU(W_gate u) ⊙ RGLRU(conv1d_causal(W_in u)) ); MLP is Linear-ReLU-Linear.
    GeLU is the tanh approximation, as in the Griffin/RecurrentGemma reference (``gelu_pytorch_tanh``,
    jax.nn.gelu's default); torch's exact-erf kernel alone would also touch ~3.5 MB more of libtorch's code.
    """

    def __init__(
        self,
        dim: int,
        lru_dim: int,
        mlp_hidden: int,
        heads: int = 1,
        conv_width: int = 4,
        scan: str = "parallel",
    ) -> None:
        super().__init__()
        self.dim, self.lru_dim, self.conv_width = dim, lru_dim, conv_width
        self.mixer_norm = nn.RMSNorm(dim, eps=1e-6)
        self.gate_proj = nn.Linear(dim, lru_dim)
        self.in_proj = nn.Linear(dim, lru_dim)
        # Depthwise causal conv1d: v_t = Σ_k w[:, k] ⊙ u_{t-(width-1)+k} + bias. Written as shifted
        # multiply-adds: torch's depthwise conv1d falls back to a slow per-channel path on CPU.
        bound = 1.0 / math.sqrt(conv_width)
        self.conv_weight = nn.Parameter(torch.empty(lru_dim, conv_width).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.empty(lru_dim).uniform_(-bound, bound))
        self.rglru = RGLRU(lru_dim, heads=heads, scan=scan)
        self.out_proj = nn.Linear(lru_dim, dim)
        self.mlp_norm = nn.RMSNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, dim))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Whole-sequence block output (B, T, dim); causal, so end padding cannot reach valid steps."""
        u = self.mixer_norm(x)
        gate = F.gelu(self.gate_proj(u), approximate="tanh")
        v = self._causal_conv(self.in_proj(u))
        v = self.rglru(v)
        x = x + self.out_proj(gate * v)
        return x + self.mlp(self.mlp_norm(x))

    def _causal_conv(self, v: Tensor) -> Tensor:
        """Depthwise causal convolution over time of v (B, T, lru_dim)."""
        length, width = v.shape[1], self.conv_width
        padded = F.pad(v, (0, 0, width - 1, 0))
        out = self.conv_bias + padded[:, :length] * self.conv_weight[:, 0]
        for k in range(1, width):
            out = out + padded[:, k : k + length] * self.conv_weight[:, k]
        return out

    def initial_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> HawkBlockState:
        """All-zero state (empty conv history, h_0 = 0)."""
        p = self.in_proj.weight
        device, dtype = device or p.device, dtype or p.dtype
        conv = torch.zeros(batch, self.conv_width - 1, self.lru_dim, device=device, dtype=dtype)
        return HawkBlockState(conv, self.rglru.initial_state(batch, device, dtype))

    def step(self, x_t: Tensor, state: HawkBlockState) -> tuple[Tensor, HawkBlockState]:
        """One step: x_t (B, dim) -> (y_t (B, dim), new state); equals forward at that position."""
        u = self.mixer_norm(x_t)
        gate = F.gelu(self.gate_proj(u), approximate="tanh")
        window = torch.cat([state.conv, self.in_proj(u).unsqueeze(1)], dim=1)  # (B, width, lru_dim)
        v = (window * self.conv_weight.t()).sum(dim=1) + self.conv_bias
        v, h = self.rglru.step(v, state.h)
        x_t = x_t + self.out_proj(gate * v)
        y_t = x_t + self.mlp(self.mlp_norm(x_t))
        return y_t, HawkBlockState(window[:, 1:], h)


def _reverse_valid(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's valid prefix in time, leaving its end padding in place (an involution)."""
    t = torch.arange(x.shape[1], device=x.device)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return torch.take_along_dim(x, idx[:, :, None], dim=1)


class Hawk(nn.Module):
    """A stack of HawkBlocks with a final RMSNorm; ``bidirectional=True`` makes it non-causal.

    The bidirectional version runs a second stack on each row's valid steps in reverse time and
    combines both outputs with a linear map on their concatenation; it has no ``step``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        lru_dim: int,
        mlp_hidden: int,
        heads: int = 1,
        bidirectional: bool = False,
        scan: str = "parallel",
    ) -> None:
        super().__init__()
        self.dim, self.bidirectional = dim, bidirectional

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                HawkBlock(dim, lru_dim, mlp_hidden, heads=heads, scan=scan) for _ in range(depth)
            )

        self.blocks = stack()
        self.backward_blocks = stack() if bidirectional else None
        self.combine = nn.Linear(2 * dim, dim) if bidirectional else None
        self.norm = nn.RMSNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Outputs (B, T, dim) for inputs x (B, T, dim); padded steps (mask False) output 0.

        Padded steps never change valid outputs, in either direction.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"Hawk expects x of shape (B, T, {self.dim}), got {tuple(x.shape)}")
        mask = check_padding_mask(mask, x.shape[0], x.shape[1])
        y = x
        for block in self.blocks:
            y = block(y)
        if self.bidirectional:
            if mask is None:  # every row is whole: plain time reversal
                reverse = lambda v: v.flip(1)  # noqa: E731
            else:
                lengths = mask.sum(dim=1)
                reverse = lambda v: _reverse_valid(v, lengths)  # noqa: E731
            yb = reverse(x)
            for block in self.backward_blocks:
                yb = block(yb)
            y = self.combine(torch.cat([y, reverse(yb)], dim=-1))
        y = self.norm(y)
        if mask is not None:
            y = torch.where(mask[:, :, None], y, torch.zeros((), dtype=y.dtype, device=y.device))
        return y

    def initial_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> list[HawkBlockState]:
        """Zero state of every block, for ``step``."""
        return [block.initial_state(batch, device, dtype) for block in self.blocks]

    def step(self, x_t: Tensor, state: list[HawkBlockState]) -> tuple[Tensor, list[HawkBlockState]]:
        """One causal step x_t (B, dim) -> (y_t (B, dim), new state); not defined when bidirectional."""
        if self.bidirectional:
            raise ValueError("a bidirectional Hawk sees the future and cannot be stepped; use forward")
        if x_t.dim() != 2 or x_t.shape[-1] != self.dim:
            raise ValueError(f"Hawk.step expects x_t of shape (B, {self.dim}), got {tuple(x_t.shape)}")
        new_state = []
        for block, s in zip(self.blocks, state):
            x_t, s = block.step(x_t, s)
            new_state.append(s)
        return self.norm(x_t), new_state
