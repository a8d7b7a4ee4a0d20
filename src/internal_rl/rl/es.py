"""Evolution strategies (Salimans et al. 2017, "Evolution Strategies as a Scalable Alternative to RL").

Over a flat parameter vector θ (the concatenation of a list of tensors), each generation:

    ε_1..ε_{P/2} ~ N(0, I),  members θ + σ ε_i and θ − σ ε_i        (antithetic sampling)
    F_i = fitness(member_i);  u_i = rank(F_i) / (P − 1) − 1/2        (centred-rank shaping)
    g = 1 / (P σ) Σ_i u_i ε_i  (ε of a minus member is −ε)          (search-gradient estimate)
    θ ← optimizer step ascending g (Adam or SGD; optional L2 weight decay)

The fitness function gets parameter vectors: one at a time (``fitness(vector) -> float``) or, with
``batched=True``, the whole population at once (``fitness(list of vectors) -> sequence of floats``),
so it can evaluate members in one batched call. Under ``torch.distributed`` every rank draws the
same noise (same seed), evaluates its own contiguous slice of the population, and the fitnesses are
combined across ranks (an all-reduce of disjoint slices, i.e. an all-gather), so every rank takes
the same step. Works with gloo on CPU.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["centered_ranks", "EvolutionStrategy", "evolve"]


def centered_ranks(fitness: Tensor) -> Tensor:
    """Fitness shaping: ranks mapped linearly to [−0.5, 0.5]; tied fitnesses share their mean rank (so a
    population that scores all alike gives no step, and neither does an antithetic pair that ties); NaN
    ranks lowest."""
    f = torch.nan_to_num(fitness.double(), nan=-math.inf)
    order = torch.argsort(f, stable=True)
    _, group, counts = torch.unique_consecutive(f[order], return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # rank of each tie group's first member
    ranks = torch.empty_like(f)
    ranks[order] = (first + (counts - 1) / 2).to(f.dtype)[group]
    return ranks / max(f.numel() - 1, 1) - 0.5


class EvolutionStrategy:
    """Antithetic OpenAI-ES over a list of tensors, updated in place; ``ask``/``tell`` or ``step``."""

    def __init__(
        self,
        params: Sequence[Tensor],
        population_size: int = 32,
        sigma: float = 0.02,
        lr: float = 0.01,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("EvolutionStrategy needs at least one parameter tensor")
        if population_size < 2 or population_size % 2:
            raise ValueError(f"population_size must be even and >= 2 (antithetic pairs), got {population_size}")
        if not sigma > 0 or not lr > 0 or weight_decay < 0:
            raise ValueError(f"need sigma > 0, lr > 0, weight_decay >= 0; got {sigma}, {lr}, {weight_decay}")
        self.population_size, self.sigma, self.weight_decay = population_size, float(sigma), float(weight_decay)
        with torch.no_grad():
            self.theta = nn.utils.parameters_to_vector(self.params).detach().clone()
        if optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam([self.theta], lr=lr)
        elif optimizer == "sgd":
            self.opt = torch.optim.SGD([self.theta], lr=lr)
        else:
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self._eps: Tensor | None = None

    @property
    def num_params(self) -> int:
        return self.theta.numel()

    def ask(self) -> Tensor:
        """Draw a new population (P, N): θ + σ ε for the first half, θ − σ ε for the second."""
        half = torch.randn(self.population_size // 2, self.num_params, generator=self.generator,
                           dtype=self.theta.dtype).to(self.theta.device)
        self._eps = torch.cat([half, -half])
        return self.theta + self.sigma * self._eps

    def tell(self, fitness: Tensor | Sequence[float]) -> dict[str, float]:
        """Update θ from the population's fitnesses (P,) (higher is better); write θ into the params."""
        if self._eps is None:
            raise RuntimeError("call ask() before tell()")
        f = torch.as_tensor(fitness, dtype=torch.float64).reshape(-1)
        if f.numel() != self.population_size:
            raise ValueError(f"expected {self.population_size} fitnesses, got {f.numel()}")
        u = centered_ranks(f).to(self.theta.dtype).to(self.theta.device)
        grad = u @ self._eps / (self.population_size * self.sigma)
        self.theta.grad = -grad + self.weight_decay * self.theta  # the optimiser descends
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self._eps = None
        self.load(self.theta)
        finite = f[torch.isfinite(f)]
        return {
            "fitness_mean": float(finite.mean()) if finite.numel() else math.nan,
            "fitness_max": float(f.max()),
            "fitness_min": float(f.min()),
            "grad_norm": float(grad.norm()),
        }

    def load(self, vector: Tensor) -> None:
        """Write a flat parameter vector into the parameter tensors."""
        with torch.no_grad():
            nn.utils.vector_to_parameters(vector.to(self.params[0].dtype), self.params)

    def evaluate(self, population: Tensor, fitness: Callable, batched: bool = False) -> Tensor:
        """Fitness of each member (P,), split across ranks when torch.distributed is initialised."""
        P = population.shape[0]
        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        mine = torch.arange(P).tensor_split(world)[rank]
        out = torch.zeros(P, dtype=torch.float64)
        if mine.numel():
            members = [population[i] for i in mine.tolist()]
            if batched:
                vals = torch.as_tensor([float(v) for v in fitness(members)], dtype=torch.float64)
                if vals.numel() != len(members):
                    raise ValueError(f"batched fitness returned {vals.numel()} values for {len(members)} members")
            else:
                vals = torch.tensor([float(fitness(m)) for m in members], dtype=torch.float64)
            out[mine] = vals
        if distributed:
            dist.all_reduce(out)  # slices are disjoint: the sum is the gathered population
        return out

    def step(self, fitness: Callable, batched: bool = False) -> dict[str, float]:
        """One generation: ask, evaluate, tell. The params hold θ again afterwards."""
        population = self.ask()
        try:
            f = self.evaluate(population, fitness, batched)
        finally:
            self.load(self.theta)  # the fitness function may have loaded a member
        return self.tell(f)


def evolve(
    params: Sequence[Tensor],
    fitness: Callable,
    num_generations: int,
    *,
    population_size: int = 32,
    sigma: float = 0.02,
    lr: float = 0.01,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    seed: int = 0,
    batched: bool = False,
    callback: Callable[[int, dict], None] | None = None,
) -> list[dict[str, float]]:
    """Run ``num_generations`` of ES on ``params`` (updated in place); returns per-generation stats.

    ``fitness(vector) -> float`` (or, with ``batched=True``, ``fitness(list of vectors) -> floats``);
    ``callback(generation, stats)`` is called after each generation.
    """
    if num_generations < 0:
        raise ValueError(f"num_generations must be >= 0, got {num_generations}")
    es = EvolutionStrategy(params, population_size, sigma, lr, optimizer, weight_decay, seed)
    history = []
    for g in range(num_generations):
        stats = es.step(fitness, batched)
        history.append(stats)
        if callback is not None:
            callback(g, stats)
    return history
