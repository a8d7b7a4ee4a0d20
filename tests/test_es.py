"""Evolution strategies (internal_rl.rl.es): shaping, improvement, determinism, batching, distribution."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from internal_rl.rl.es import EvolutionStrategy, centered_ranks, evolve

TARGET = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0])


def quad_params() -> list[torch.Tensor]:
    return [torch.zeros(3), torch.zeros(2, requires_grad=True)]


def quad_fitness(vector: torch.Tensor) -> float:
    return -float((vector - TARGET).square().sum())


def run(seed: int = 0, **kw) -> tuple[list[torch.Tensor], list[dict]]:
    params = quad_params()
    args = dict(population_size=16, sigma=0.1, lr=0.1, seed=seed)
    args.update(kw)
    return params, evolve(params, quad_fitness, 60, **args)


def flat(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def test_centered_ranks():
    u = centered_ranks(torch.tensor([3.0, -1.0, 10.0, 0.0, float("nan")]))
    torch.testing.assert_close(u, torch.tensor([0.25, -0.25, 0.5, 0.0, -0.5], dtype=torch.float64))
    assert centered_ranks(torch.randn(8)).sum().abs() < 1e-12
    # ties share their mean rank: 1.0 holds ranks 1 and 2 of 0..3
    torch.testing.assert_close(centered_ranks(torch.tensor([1.0, 0.0, 1.0, 5.0])),
                               torch.tensor([0.0, -0.5, 0.0, 0.5], dtype=torch.float64))
    assert torch.equal(centered_ranks(torch.ones(6)), torch.zeros(6, dtype=torch.float64))


def test_constant_fitness_leaves_parameters_still():
    """A fitness that does not tell members apart (a success rate of 0 everywhere) must not move θ."""
    params = quad_params()
    before = flat(params)
    es = EvolutionStrategy(params, population_size=8, sigma=0.1, lr=0.1, seed=0)
    for _ in range(5):
        es.ask()
        es.tell(torch.ones(8))
    assert torch.equal(flat(params), before)


def test_improves_and_is_deterministic_under_seed():
    start = quad_fitness(flat(quad_params()))
    p1, h1 = run(seed=0)
    p2, h2 = run(seed=0)
    p3, _ = run(seed=1)
    assert quad_fitness(flat(p1)) > 0.1 * start  # from −14.25 to close to 0
    assert torch.equal(flat(p1), flat(p2)) and h1 == h2
    assert not torch.equal(flat(p1), flat(p3))
    assert all(p.requires_grad == q.requires_grad for p, q in zip(p1, quad_params()))


def test_arguments_change_what_they_say():
    base, _ = run()
    for kw in (dict(sigma=0.3), dict(lr=0.02), dict(population_size=8), dict(optimizer="sgd"),
               dict(weight_decay=0.5)):
        other, _ = run(**kw)
        assert not torch.equal(flat(base), flat(other)), kw
    small_lr, _ = run(lr=0.01)
    assert quad_fitness(flat(small_lr)) < quad_fitness(flat(base))  # smaller steps: not there yet
    decayed, _ = run(weight_decay=1.0)
    assert flat(decayed).norm() < flat(base).norm()  # L2 pulls towards 0


def test_batched_equals_one_by_one():
    calls = []

    def batched(vectors):
        calls.append(len(vectors))
        return [quad_fitness(v) for v in vectors]

    p1, _ = run()
    p2 = quad_params()
    evolve(p2, batched, 60, population_size=16, sigma=0.1, lr=0.1, seed=0, batched=True)
    assert torch.equal(flat(p1), flat(p2))
    assert calls == [16] * 60


def test_params_hold_the_mean_after_each_generation_and_ask_tell():
    params = quad_params()
    es = EvolutionStrategy(params, population_size=4, sigma=0.1, lr=0.1)
    pop = es.ask()
    assert pop.shape == (4, 5)
    torch.testing.assert_close(pop[:2] + pop[2:], 2 * es.theta.expand(2, 5))  # antithetic
    stats = es.tell([quad_fitness(v) for v in pop])
    assert set(stats) >= {"fitness_mean", "fitness_max", "grad_norm"}
    torch.testing.assert_close(flat(params), es.theta)
    with pytest.raises(RuntimeError):
        es.tell([0.0] * 4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        EvolutionStrategy(quad_params(), population_size=5)
    with pytest.raises(ValueError, match="sigma"):
        EvolutionStrategy(quad_params(), sigma=0.0)
    with pytest.raises(ValueError, match="optimizer"):
        EvolutionStrategy(quad_params(), optimizer="rmsprop")
    with pytest.raises(ValueError, match="at least one"):
        EvolutionStrategy([])
    es = EvolutionStrategy(quad_params(), population_size=4)
    es.ask()
    with pytest.raises(ValueError, match="expected 4"):
        es.tell([0.0] * 3)


def _worker(rank: int, world: int, path: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    evaluated = []

    def fitness(v):
        evaluated.append(1)
        return quad_fitness(v)

    params = quad_params()
    evolve(params, fitness, 10, population_size=16, sigma=0.1, lr=0.1, seed=0)
    torch.save({"params": flat(params), "evaluated": len(evaluated)}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")
def test_distributed_two_ranks_match_single_process():
    params = quad_params()
    evolve(params, quad_fitness, 10, population_size=16, sigma=0.1, lr=0.1, seed=0)
    with tempfile.TemporaryDirectory() as d:
        store, out = os.path.join(d, "store"), os.path.join(d, "out")
        mp.start_processes(_worker, args=(2, store, out), nprocs=2, join=True, start_method="fork")
        results = [torch.load(f"{out}.{r}") for r in range(2)]
    for r in results:
        assert torch.equal(r["params"], flat(params))  # every rank takes the same step
        assert r["evaluated"] == 10 * 8  # each rank evaluated half of the population


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_sgd_generation_matches_hand_computed_search_gradient(weight_decay):
    """One SGD generation moves θ by exactly lr·(Σ_i u_i ε_i / (P σ) − λ θ0), with u the centred ranks (from a
    plain double loop), ε_i = (member_i − θ0)/σ recovered from what the fitness saw, members antithetic."""
    theta0 = torch.tensor([0.3, -1.2, 0.7, 2.0, -0.4], dtype=torch.float64)
    params = [theta0[:3].clone(), theta0[3:].clone().reshape(1, 2)]
    P, sigma, lr = 6, 0.05, 0.2
    weights = torch.tensor([1.0, 2.0, -0.5, 3.0, 1.5], dtype=torch.float64)
    seen = []

    def score(v):
        return float(weights @ v - (v**2).sum())  # distinct values almost surely; no ties

    def fitness(v):
        seen.append(v.detach().clone())
        return score(v)

    es = EvolutionStrategy(params, population_size=P, sigma=sigma, lr=lr, optimizer="sgd",
                           weight_decay=weight_decay, seed=3)
    stats = es.step(fitness)
    assert len(seen) == P
    eps = [(v - theta0) / sigma for v in seen]
    for i in range(P // 2):  # antithetic: the second half mirrors the first
        torch.testing.assert_close(eps[i + P // 2], -eps[i], rtol=0, atol=1e-12)
    F = [score(v) for v in seen]
    u = [sum(F[j] < F[i] for j in range(P)) / (P - 1) - 0.5 for i in range(P)]
    assert sorted(u) == [k / (P - 1) - 0.5 for k in range(P)]
    g = sum(u[i] * eps[i] for i in range(P)) / (P * sigma)
    expected = theta0 + lr * (g - weight_decay * theta0)
    torch.testing.assert_close(flat(params), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(es.theta, expected, rtol=0, atol=1e-12)
    assert stats["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-12)
    assert (expected - theta0).abs().max() > 1e-3  # the step is not negligible
