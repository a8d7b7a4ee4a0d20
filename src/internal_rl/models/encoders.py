"""Observation encoders: map an observation o_t to the first residual-stream vector e_{t,0}.

The paper does not specify the encoder. `linear` is a single linear map of the flat observation.
`grid` is a function of the same observation only (no extra information) that makes two things
linear which a flat linear map cannot express: the contents of the cell under the agent (what was
just visited) and an egocentric view of the grid (where things are relative to the agent). On
2 CPU cores this is what lets in-context subgoal inference emerge within minutes (docs/RESULTS.md).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


class LinearEncoder(nn.Module):
    """e_0 = W o + b."""

    def __init__(self, obs_dim: int, d_model: int):
        super().__init__()
        self.proj = nn.Linear(obs_dim, d_model)

    def forward(self, obs: Tensor) -> Tensor:
        return self.proj(obs)


class GridEncoder(nn.Module):
    """Encoder for (row, col, channel) one-hot grids whose last channel marks the agent.

    e_0 = W_flat o + W_under (contents of the agent's cell) + W_ego (egocentric view), where the
    egocentric view places every cell's contents (plus an "inside the grid" bit) at its offset from
    the agent in a (2G−1)×(2G−1) window.
    """

    def __init__(self, grid: int, channels: int, d_model: int):
        super().__init__()
        self.grid, self.channels = grid, channels
        window = (2 * grid - 1) ** 2
        self.flat = nn.Linear(grid * grid * channels, d_model)
        self.under = nn.Linear(channels - 1, d_model, bias=False)
        self.ego = nn.Linear(window * channels, d_model, bias=False)
        rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        self.register_buffer("rows", rows.reshape(-1), persistent=False)
        self.register_buffer("cols", cols.reshape(-1), persistent=False)

    def egocentric(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Return (contents under agent (N, C−1), egocentric window (N, (2G−1)², C)) for flat obs (N, G²C)."""
        G, C = self.grid, self.channels
        cells = rearrange(obs, "n (cell k) -> n cell k", k=C)
        agent, contents = cells[..., -1], cells[..., :-1]
        under = torch.einsum("nc,nck->nk", agent, contents)
        pos = agent.argmax(dim=1)
        r0, c0 = self.rows[pos], self.cols[pos]
        idx = (self.rows[None] - r0[:, None] + G - 1) * (2 * G - 1) + (self.cols[None] - c0[:, None] + G - 1)
        inside = torch.ones_like(contents[..., :1])
        values = torch.cat([contents, inside], dim=-1)
        window = obs.new_zeros(obs.shape[0], (2 * G - 1) ** 2, C)
        window.scatter_(1, idx[..., None].expand(-1, -1, C), values)
        return under, window

    def forward(self, obs: Tensor) -> Tensor:
        lead = obs.shape[:-1]
        flat = obs.reshape(-1, obs.shape[-1])
        under, window = self.egocentric(flat)
        e = self.flat(flat) + self.under(under) + self.ego(rearrange(window, "n w k -> n (w k)"))
        return e.reshape(*lead, -1)


def make_encoder(kind: str, obs_dim: int, d_model: int, grid: int = 7) -> nn.Module:
    """Build the encoder named `kind` ("linear" or "grid")."""
    if kind == "linear":
        return LinearEncoder(obs_dim, d_model)
    if kind == "grid":
        if obs_dim % (grid * grid):
            raise ValueError(f"grid encoder: obs_dim {obs_dim} is not a multiple of grid²={grid * grid}")
        return GridEncoder(grid, obs_dim // (grid * grid), d_model)
    raise ValueError(f"unknown encoder {kind!r}; expected 'linear' or 'grid'")
