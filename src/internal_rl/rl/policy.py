"""The internal-RL policy π(z_t | e_{τ_1}, …, e_{τ_k}): a causal one-layer Hawk SSM over the residual
streams seen at switch times, giving a diagonal Gaussian over the abstract action z (paper C.5, D.3).

The output head starts at zero, so at initialisation π = N(0, I), the metacontroller's prior: early
behaviour matches sampling z from the prior, which the discovery KL made meaningful.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from internal_rl.models.ssm import Hawk, HawkBlockState, check_padding_mask


def gaussian_logp(z: Tensor, mean: Tensor, logstd: Tensor) -> Tensor:
    """Joint log-density of a diagonal Gaussian (summed over the last dim): the PPO ratio uses this."""
    return (-0.5 * ((z - mean) / logstd.exp()) ** 2 - logstd - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(logstd: Tensor) -> Tensor:
    """Entropy of a diagonal Gaussian (summed over the last dim): Σ_d log σ_d + ½ log(2πe) per dimension."""
    return (logstd + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


class SwitchStreamSSM(nn.Module):
    """The trunk the policy and the critic share in shape: LayerNorm → Linear → causal Hawk SSM over the
    residual streams seen at switch times (each keeps its own weights; the attribute names are the
    checkpoints' keys)."""

    def __init__(self, d_model: int, width: int, depth: int):
        super().__init__()
        self.norm_in = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, width)
        self.ssm = Hawk(width, depth, lru_dim=width, mlp_hidden=2 * width)

    def features(self, e: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, K, width) for the residual streams at K switch times e (B, K, D)."""
        return self.ssm(self.proj(self.norm_in(e)), mask)

    def step_features(self, e_t: Tensor, state: list[HawkBlockState]) -> tuple[Tensor, list[HawkBlockState]]:
        """One decision of `features`: (B, width) for e_t (B, D), and the new recurrent state."""
        return self.ssm.step(self.proj(self.norm_in(e_t)), state)


class LatentPolicy(SwitchStreamSSM):
    """Causal SSM policy over z. Parallel `forward` (training) and `step` (rollouts) agree."""

    def __init__(self, d_model: int, n_z: int, width: int = 256, depth: int = 1, min_std: float = 0.0):
        if not 0.0 <= min_std < math.exp(2.0):
            raise ValueError(f"min_std must be in [0, e^2) (0: no floor), got {min_std}")
        super().__init__(d_model, width, depth)
        self.n_z = n_z
        # σ's floor as log σ: with min_std > 0 exploration never narrows below it (0: the clamp at e^-5)
        self.min_logstd = math.log(min_std) if min_std > math.exp(-5.0) else -5.0
        self.head = nn.Linear(width, 2 * n_z)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _dist(self, y: Tensor) -> tuple[Tensor, Tensor]:
        mean, logstd = self.head(y).chunk(2, dim=-1)
        return mean, logstd.clamp(self.min_logstd, 2.0)

    def forward(self, e: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(mean, logstd) (B, K, n_z) for the residual streams at K switch times e (B, K, D)."""
        return self._dist(self.features(e, mask))

    def initial_state(self, batch: int) -> list[HawkBlockState]:
        p = self.head.weight
        return self.ssm.initial_state(batch, p.device, p.dtype)

    def step(self, e_t: Tensor, state: list[HawkBlockState]) -> tuple[Tensor, Tensor, list[HawkBlockState]]:
        """One decision: (mean, logstd) (B, n_z) and the new state."""
        y, state = self.step_features(e_t, state)
        mean, logstd = self._dist(y)
        return mean, logstd, state

    def step_rows(self, e_t: Tensor, state: list[HawkBlockState],
                  rows: Tensor) -> tuple[Tensor, Tensor, list[HawkBlockState]]:
        """A decision for the batch rows `rows` only: (mean, logstd) (R, n_z) and their new state, from the
        whole batch's e_t (B, D) and state (rollouts where only some rows switch)."""
        picked = [HawkBlockState(*(a.index_select(0, rows) for a in s)) for s in state]
        return self.step(e_t.index_select(0, rows), picked)


def select_state(keep_new: Tensor, new: list[HawkBlockState], old: list[HawkBlockState]) -> list[HawkBlockState]:
    """Per row, the new state where keep_new (B,) else the old one (rows that made no decision)."""
    out = []
    for n, o in zip(new, old):
        out.append(HawkBlockState(*(torch.where(keep_new.view(-1, *([1] * (a.dim() - 1))), a, b)
                                    for a, b in zip(n, o))))
    return out


class _Stepper(nn.Module):
    """``LatentPolicy.step`` as a module's forward, so that ``torch.func.functional_call`` can run it."""

    def __init__(self, policy: LatentPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, e_t: Tensor, state: list[HawkBlockState]) -> tuple[Tensor, Tensor, list[HawkBlockState]]:
        return self.policy.step(e_t, state)


class PopulationPolicy(nn.Module):
    """P parameter vectors of one LatentPolicy acting side by side, for evaluating an ES population in one
    batch: the B rows of every input are split into P equal contiguous blocks, block i acting with vector i
    (``torch.func.vmap`` over ``functional_call``). Same ``forward`` / ``step`` / ``initial_state`` as the
    policy; each vector is laid out as ``nn.utils.parameters_to_vector(policy.parameters())``.
    """

    def __init__(self, policy: LatentPolicy, vectors: Tensor):
        super().__init__()
        n = sum(p.numel() for p in policy.parameters())
        if vectors.dim() != 2 or vectors.shape[1] != n:
            raise ValueError(f"vectors must be (P, {n}) (the policy's parameters, flattened), got {tuple(vectors.shape)}")
        self.policy, self.population = policy, vectors.shape[0]
        self.n_z = policy.n_z
        params, start = {}, 0
        for name, p in policy.named_parameters():
            params[name] = vectors[:, start:start + p.numel()].reshape(self.population, *p.shape)
            start += p.numel()
        self._params = params
        self._stepper = _Stepper(policy)

    def _blocks(self, x: Tensor) -> Tensor:
        """(B, ...) → (P, B / P, ...)."""
        if x.shape[0] % self.population:
            raise ValueError(f"batched ES: the batch ({x.shape[0]} rows) must be a multiple of the population "
                             f"size ({self.population}); rows i·B/P .. (i+1)·B/P − 1 belong to member i")
        return x.reshape(self.population, x.shape[0] // self.population, *x.shape[1:])

    @staticmethod
    def _rows(x: Tensor) -> Tensor:
        """(P, E, ...) → (P·E, ...)."""
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])

    def forward(self, e: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(mean, logstd) (B, K, n_z) for e (B, K, D), each row with its member's parameters.

        The policy is causal, so end padding cannot reach valid steps: the mask is checked and the members
        run unmasked (the outputs at padded steps are not specified).
        """
        check_padding_mask(mask, e.shape[0], e.shape[1])

        def one(params, e_i):
            return torch.func.functional_call(self.policy, params, (e_i,))

        mean, logstd = torch.func.vmap(one)(self._params, self._blocks(e))
        return self._rows(mean), self._rows(logstd)

    def initial_state(self, batch: int) -> list[HawkBlockState]:
        return self.policy.initial_state(batch)

    def step(self, e_t: Tensor, state: list[HawkBlockState]) -> tuple[Tensor, Tensor, list[HawkBlockState]]:
        """One decision for every row: (mean, logstd) (B, n_z) and the new state."""
        def one(params, e_i, state_i):
            return torch.func.functional_call(self._stepper, {f"policy.{k}": v for k, v in params.items()},
                                              (e_i, state_i))

        blocks = [HawkBlockState(*(self._blocks(t) for t in s)) for s in state]
        mean, logstd, new = torch.func.vmap(one)(self._params, self._blocks(e_t), blocks)
        return self._rows(mean), self._rows(logstd), [HawkBlockState(*(self._rows(t) for t in s)) for s in new]

    def step_rows(self, e_t: Tensor, state: list[HawkBlockState],
                  rows: Tensor) -> tuple[Tensor, Tensor, list[HawkBlockState]]:
        """As ``LatentPolicy.step_rows``; a row's member is its position, so every row is stepped and the
        requested ones are picked."""
        mean, logstd, new = self.step(e_t, state)
        return (mean.index_select(0, rows), logstd.index_select(0, rows),
                [HawkBlockState(*(a.index_select(0, rows) for a in s)) for s in new])
