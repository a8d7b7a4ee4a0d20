"""Causal pre-norm transformer blocks with T5-style relative-position attention biases and a KV cache.

This is the paper's gridworld backbone (App. D.1): pre-norm, relative-position biases with 32
buckets, ReLU MLP, variance-scaling init with scale 0.1. Each block reads and writes the residual
stream e; the sequence model (sequence_model.py) stacks them and exposes e after every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def variance_scaling_(weight: Tensor, scale: float) -> Tensor:
    """Truncation-free variance scaling (fan-in): std = sqrt(scale / fan_in), as in JAX/Flax inits. The draw
    goes through a contiguous tensor, so a weight gets the same values whatever its memory layout."""
    fan_in = weight.shape[1]
    with torch.no_grad():
        if weight.is_contiguous():
            return weight.normal_(0.0, math.sqrt(scale / fan_in))
        return weight.copy_(torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
                            .normal_(0.0, math.sqrt(scale / fan_in)))


def relative_position_bucket(distance: Tensor, num_buckets: int = 32, max_distance: int = 128) -> Tensor:
    """Map causal distances (query − key ≥ 0) to buckets: exact below num_buckets/2, log-spaced above.

    Negative distances (future keys, masked anyway) share bucket 0.
    """
    distance = distance.clamp(min=0)
    exact = num_buckets // 2
    is_small = distance < exact
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = exact + (log_ratio * (num_buckets - exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return torch.where(is_small, distance, large)


KV_INITIAL_CAPACITY = 16
"""Positions a new KVCache holds per layer before it first doubles."""


@dataclass
class KVCache:
    """Keys and values of every layer for one-step inference, (B, H, capacity, head_dim) per layer.

    `length[l]` is how many positions layer l has cached, so the lower and upper parts of the
    network can be advanced separately (the option-level environment needs that). Buffers start at
    ``KV_INITIAL_CAPACITY`` positions and double when full, up to `max_len`; every position at or beyond
    `length[l]` holds zeros. A one-position step then attends over the whole buffer with the empty slots
    masked: a contiguous read, several times faster at large batches than reading a slice of a larger
    buffer (whose strided batched products go one small matrix at a time), and at most twice the filled
    positions.
    """

    k: list[Tensor]
    v: list[Tensor]
    length: list[int]
    max_len: int | None = None
    """Most positions a layer may hold (None: no limit)."""

    @classmethod
    def empty(cls, depth: int, batch: int, heads: int, head_dim: int, max_len: int | None, device, dtype) -> KVCache:
        """An empty cache for up to `max_len` positions per layer (None: any number), allocated as they are added."""
        shape = (batch, heads, KV_INITIAL_CAPACITY if max_len is None else min(max_len, KV_INITIAL_CAPACITY), head_dim)
        return cls(
            k=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)],
            v=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)],
            length=[0] * depth,
            max_len=max_len,
        )

    def reserve(self, layer: int, need: int) -> None:
        """Make `layer`'s buffers hold at least `need` positions (doubling, capped at max_len); raise if `need`
        exceeds both the capacity and max_len."""
        if need <= self.k[layer].shape[2]:
            return
        if self.max_len is not None and need > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} steps; cannot add {need}")
        self.k[layer] = _doubled(self.k[layer], need, self.max_len)
        self.v[layer] = _doubled(self.v[layer], need, self.max_len)

    def index_select(self, idx: Tensor) -> KVCache:
        """Keep only the batch rows in `idx` (e.g. to drop finished episodes); copies the filled positions only."""
        def keep(buf: Tensor, n: int) -> Tensor:
            out = buf.new_zeros((len(idx),) + buf.shape[1:])
            out[:, :, :n] = buf[:, :, :n].index_select(0, idx)
            return out

        return KVCache([keep(k, n) for k, n in zip(self.k, self.length)],
                       [keep(v, n) for v, n in zip(self.v, self.length)], list(self.length), self.max_len)


def _doubled(old: Tensor, need: int, limit: int | None = None) -> Tensor:
    """A (B, H, C', head_dim) copy of `old` whose capacity C' doubles C until it holds `need` positions (capped
    at `limit`); new slots are zeros."""
    cap = new_cap = old.shape[2]
    while new_cap < need:
        new_cap *= 2
    if limit is not None:
        new_cap = max(cap, min(new_cap, limit))
    grown = old.new_zeros(old.shape[0], old.shape[1], new_cap, old.shape[3])
    grown[:, :, :cap] = old
    return grown


def grow_kv(k: list[Tensor], v: list[Tensor], need: int) -> None:
    """Double the capacity of per-layer key/value buffers (B, H, C, head_dim), in place in the lists, until
    each holds `need` positions; the old positions are copied, the new ones start at zero."""
    for buf in (k, v):
        for i, old in enumerate(buf):
            if need > old.shape[2]:
                buf[i] = _doubled(old, need)


class Attention(nn.Module):
    """Multi-head causal self-attention with a learned per-head relative-position bias."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, num_buckets: int, max_distance: int,
                 window: int = 0):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.window = window  # attend only to keys at distance < window (0: to every past key)
        self.qkv = nn.Linear(d_model, 3 * n_heads * head_dim, bias=False)
        self.out = nn.Linear(n_heads * head_dim, d_model, bias=False)
        self.rel_bias = nn.Embedding(num_buckets, n_heads)
        self._buckets = torch.zeros(0, dtype=torch.long)  # bucket of each distance, grown on demand

    def bias(self, q_start: int, n_q: int, n_k: int, device) -> Tensor:
        """(heads, n_q, n_k) additive bias for queries at positions q_start.. over keys 0..n_k−1, −inf on future
        keys (and, with a window, on keys `window` or more steps back).

        The per-head bias depends only on the distance, so it is looked up once per distance (a table of
        n_k rows) and laid out by indexing, rather than bucketing every (query, key) pair.
        """
        if self._buckets.numel() < n_k or self._buckets.device != torch.device(device):
            self._buckets = relative_position_bucket(torch.arange(max(n_k, 256), device=device), self.num_buckets,
                                                     self.max_distance)
        table = self.rel_bias(self._buckets[:n_k])  # (n_k, heads): bias of distance d
        dist = torch.arange(q_start, q_start + n_q, device=device)[:, None] - torch.arange(n_k, device=device)[None]
        b = rearrange(table[dist.clamp(min=0)], "q k h -> h q k")
        hidden = dist < 0
        if self.window:
            hidden = hidden | (dist >= self.window)
        # decided from the sizes, not hidden.any(), which would sync with the device at every call
        anything_hidden = n_q > 1 or (self.window > 0 and q_start + 1 > self.window)
        return b.masked_fill(hidden, float("-inf")) if anything_hidden else b

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """x: (B, T, D). With a cache, x holds the next T positions and the cache is extended in place."""
        T = x.shape[1]
        if cache is not None and T == 1:
            return self._decode_one(x, cache, layer)
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.n_heads)
        start = 0
        if cache is not None:
            start = cache.length[layer]
            cache.reserve(layer, start + T)
            cache.k[layer][:, :, start : start + T] = k
            cache.v[layer][:, :, start : start + T] = v
            cache.length[layer] = start + T
            k = cache.k[layer][:, :, : start + T]
            v = cache.v[layer][:, :, : start + T]
        bias = self.bias(start, T, start + T, x.device).to(q.dtype)
        # a 4-D mask (a stride-0 view over the batch) takes the fused CPU kernel; a 3-D one falls back to
        # the unfused math path (about 2x slower forward, 1.4x forward + backward at batch 2, T = 128)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(q.shape[0], -1, -1, -1))
        return self.out(rearrange(y, "b h t d -> b t (h d)"))

    def _decode_one(self, x: Tensor, cache: KVCache, layer: int) -> Tensor:
        """One new position against the cache (the rollout hot path): the same attention as `forward`,
        written as a few plain matmuls because the fused kernel falls back to a slow path for a single
        query with an additive bias (about 80 µs per call on one CPU thread; a block step at batch 2 went
        from 256 to 200 µs with this path). It reads the layer's whole buffer, the empty (zero) slots and any
        outside the window masked, because a contiguous batched product is far faster than one over a slice.
        """
        B, H, D = x.shape[0], self.n_heads, self.head_dim
        start = cache.length[layer]
        cache.reserve(layer, start + 1)
        q, k, v = self.qkv(x[:, 0]).view(B, 3, H, D).unbind(1)  # each (B, H, D)
        keys, values = cache.k[layer], cache.v[layer]  # (B, H, C, D), zeros from position n on
        keys[:, :, start] = k
        values[:, :, start] = v
        cache.length[layer] = n = start + 1
        first = max(0, n - self.window) if self.window else 0  # oldest key in view
        if self._buckets.numel() < n or self._buckets.device != x.device:
            self._buckets = relative_position_bucket(torch.arange(max(n, 256), device=x.device), self.num_buckets,
                                                     self.max_distance)
        # key j sits at distance start − j: the bucket table read backwards
        dist_buckets = self._buckets[: n - first].flip(0)
        bias = F.embedding(dist_buckets, self.rel_bias.weight).to(q.dtype).t()  # (H, n − first)
        capacity = keys.shape[2]
        if first > 0 or n < capacity:  # mask the slots before the window and the empty ones
            bias = F.pad(bias, (first, capacity - n), value=float("-inf"))
        # q as a row times Kᵀ: MKL's path for a (1, D)·(D, C) product is several times faster than K·q
        scores = torch.matmul((q * self.head_dim**-0.5).unsqueeze(2), keys.transpose(-1, -2)) + bias[:, None]
        attn = torch.softmax(scores, dim=-1)  # (B, H, 1, C)
        y = torch.matmul(attn, values)  # (B, H, 1, D)
        return self.out(y.reshape(B, 1, H * D))

    def decode_static(self, x: Tensor, k_buf: Tensor, v_buf: Tensor, pos: Tensor) -> Tensor:
        """One new position x (B, D) written at `pos` (a 0-dim long tensor) of fixed-capacity buffers
        k_buf, v_buf (B, H, C, head_dim), updated in place; returns the attention output (B, D).

        The same attention as `_decode_one`, but every shape is fixed (the query attends over all C slots,
        the ones after `pos` and outside the window masked out) and the position is a tensor, so that
        ``torch.compile`` builds one graph for a whole rollout (api_compiled.py). The buffers must start
        zeroed: masked slots get zero weight, but 0 · NaN from uninitialised memory would still be NaN.
        """
        B, H, D = x.shape[0], self.n_heads, self.head_dim
        q, k, v = self.qkv(x).view(B, 3, H, D).unbind(1)  # each (B, H, D)
        where = pos.view(1)
        k_buf.index_copy_(2, where, k.unsqueeze(2))
        v_buf.index_copy_(2, where, v.unsqueeze(2))
        dist = pos - torch.arange(k_buf.shape[2], device=x.device)  # (C,): distance of each slot's key
        bucket = relative_position_bucket(dist, self.num_buckets, self.max_distance)
        hidden = dist < 0
        if self.window:
            hidden = hidden | (dist >= self.window)
        bias = F.embedding(bucket, self.rel_bias.weight).to(q.dtype).t().masked_fill(hidden, float("-inf"))
        scores = torch.matmul((q * self.head_dim**-0.5).unsqueeze(2), k_buf.transpose(-1, -2)) + bias[:, None]
        y = torch.matmul(torch.softmax(scores, dim=-1), v_buf)  # (B, H, 1, D)
        return self.out(y.reshape(B, H * D))


class Block(nn.Module):
    """Pre-norm transformer block: e ← e + Attn(LN(e)); e ← e + MLP(LN(e))."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, mlp_hidden: int, num_buckets: int,
                 max_distance: int, window: int = 0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, head_dim, num_buckets, max_distance, window)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, d_model))

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))
