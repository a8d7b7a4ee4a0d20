"""The internal-RL policy π(z_t | e_{τ_1}, …, e_{τ_k}): a causal one-layer Hawk SSM over the residual
streams seen at switch times, giving a diagonal Gaussian over the abstract action z (paper C.5, D.3).

The output head starts at zero, so at initialisation π = N(0, I), the metacontroller's prior: early
behaviour matches sampling z from the prior, which the discovery KL made meaningful.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from internal_rl.models.ssm import Hawk, HawkBlockState


def gaussian_logp(z: Tensor, mean: Tensor, logstd: Tensor) -> Tensor:
    """Joint log-density of a diagonal Gaussian (summed over the last dim): the PPO ratio uses this."""
    return (-0.5 * ((z - mean) / logstd.exp()) ** 2 - logstd - 0.5 * math.log(2 * math.pi)).sum(-1)


class LatentPolicy(nn.Module):
    """Causal SSM policy over z. Parallel `forward` (training) and `step` (rollouts) agree."""

    def __init__(self, d_model: int, n_z: int, width: int = 256, depth: int = 1):
        super().__init__()
        self.n_z = n_z
        self.norm_in = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, width)
        self.ssm = Hawk(width, depth, lru_dim=width, mlp_hidden=2 * width)
        self.head = nn.Linear(width, 2 * n_z)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _dist(self, y: Tensor) -> tuple[Tensor, Tensor]:
        mean, logstd = self.head(y).chunk(2, dim=-1)
        return mean, logstd.clamp(-5.0, 2.0)

    def forward(self, e: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(mean, logstd) (B, K, n_z) for the residual streams at K switch times e (B, K, D)."""
        return self._dist(self.ssm(self.proj(self.norm_in(e)), mask))

    def initial_state(self, batch: int) -> list[HawkBlockState]:
        p = self.head.weight
        return self.ssm.initial_state(batch, p.device, p.dtype)

    def step(self, e_t: Tensor, state: list[HawkBlockState]) -> tuple[Tensor, Tensor, list[HawkBlockState]]:
        """One decision: (mean, logstd) (B, n_z) and the new state."""
        y, state = self.ssm.step(self.proj(self.norm_in(e_t)), state)
        mean, logstd = self._dist(y)
        return mean, logstd, state


def select_state(keep_new: Tensor, new: list[HawkBlockState], old: list[HawkBlockState]) -> list[HawkBlockState]:
    """Per row, the new state where keep_new (B,) else the old one (rows that made no decision)."""
    out = []
    for n, o in zip(new, old):
        out.append(HawkBlockState(*(torch.where(keep_new.view(-1, *([1] * (a.dim() - 1))), a, b)
                                    for a, b in zip(n, o))))
    return out
