"""Batched ES: a population of policy vectors acting side by side (rl.policy.PopulationPolicy, evolve(batched=True))."""

import pytest
import torch
from torch import nn

from internal_rl import MetaController, Transformer
from internal_rl.rl.policy import LatentPolicy, PopulationPolicy

D, NZ, P, E = 16, 3, 3, 2


def make_policy(seed: int = 0) -> LatentPolicy:
    torch.manual_seed(seed)
    policy = LatentPolicy(D, NZ, width=8)
    with torch.no_grad():
        policy.head.weight.normal_(0.0, 0.3)  # input-dependent (the head starts at zero)
    return policy


def member_vectors(policy: LatentPolicy) -> torch.Tensor:
    base = nn.utils.parameters_to_vector(policy.parameters()).detach()
    g = torch.Generator().manual_seed(1)
    return torch.stack([base + 0.2 * torch.randn(base.shape, generator=g) for _ in range(P)])


def test_population_matches_each_member_loaded_alone():
    policy = make_policy()
    vectors = member_vectors(policy)
    pop = PopulationPolicy(policy, vectors)
    e = torch.randn(P * E, 5, D)
    mask = torch.arange(5)[None] < torch.tensor([5, 3, 4, 5, 2, 1])[:, None]
    mean, logstd = pop(e, mask)
    state = pop.initial_state(P * E)
    steps = [pop.step(e[:, t], state) for t in range(2)]  # from the initial state each time
    s1 = pop.step(e[:, 1], steps[0][2])
    for i in range(P):
        rows = slice(i * E, (i + 1) * E)
        member = make_policy()
        nn.utils.vector_to_parameters(vectors[i], member.parameters())
        ref_mean, ref_logstd = member(e[rows], mask[rows])
        valid = mask[rows]
        torch.testing.assert_close(mean[rows][valid], ref_mean[valid], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logstd[rows][valid], ref_logstd[valid], rtol=1e-5, atol=1e-6)
        m0, l0, st = member.step(e[rows, 0], member.initial_state(E))
        torch.testing.assert_close(steps[0][0][rows], m0, rtol=1e-5, atol=1e-6)
        m1, l1, _ = member.step(e[rows, 1], st)
        torch.testing.assert_close(s1[0][rows], m1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s1[1][rows], l1, rtol=1e-5, atol=1e-6)
    # the members really differ (else the checks above would not tell rows apart)
    assert not torch.allclose(mean[:E], mean[E:2 * E], atol=1e-3)


def test_population_rejects_bad_shapes():
    policy = make_policy()
    with pytest.raises(ValueError, match=r"vectors must be \(P, "):
        PopulationPolicy(policy, torch.zeros(P, 5))
    pop = PopulationPolicy(policy, member_vectors(policy))
    with pytest.raises(ValueError, match="multiple of the population size"):
        pop(torch.randn(P * E + 1, 2, D))


def _toy_environment(e: torch.Tensor, target: torch.Tensor):
    """Deterministic fitness from the policy's mean on fixed inputs: one value per row of the batch."""
    def environment(model):
        policy = model.meta_controller.policy
        rows = getattr(policy, "population", 1)  # batched: one row per member
        with torch.no_grad():
            mean, _ = policy(e.expand(rows, -1, -1))
        return -(mean - target).square().mean(dim=(1, 2))
    return environment


def _model_pair(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(D, action_embed_readout=dict(num_discrete=4), state_embed_readout=dict(num_continuous=5),
                        lower_body=dict(depth=1), upper_body=dict(depth=1), heads=2)
    model.meta_controller = MetaController(D, dim_meta_controller=8, dim_latent=NZ)
    return model


def test_batched_evolve_takes_the_same_steps_as_member_by_member():
    env = _toy_environment(torch.randn(1, 3, D, generator=torch.Generator().manual_seed(0)), torch.full((1, 3, NZ), 0.7))
    runs = []
    for batched in (False, True):
        model = _model_pair()
        history = model.evolve(6, env, population_size=6, sigma=0.05, lr=0.03, seed=3, batched=batched)
        runs.append((history, [p.detach().clone() for p in model.meta_controller.internal_rl_parameters()]))
    (h1, p1), (h2, p2) = runs
    assert h1[-1]["fitness_mean"] > h1[0]["fitness_mean"]  # it learns
    for a, b in zip(h1, h2):
        assert a["fitness_mean"] == pytest.approx(b["fitness_mean"], abs=1e-6)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_population_rollout_with_identical_members_equals_the_plain_rollout():
    """Through the seed API's rollout (rows switching at different steps), a population whose members all
    hold the policy's own parameters gives the plain policy's rollout: each row keeps its member."""
    model = _model_pair()
    mc = model.meta_controller
    with torch.no_grad():
        mc.policy.head.weight.normal_(0.0, 0.3)
        mc.core.switch_out.weight.mul_(20.0)  # spread β so that some rows switch while others keep
    B, T = P * E, 8
    states, actions = torch.randn(B, T, 5), torch.randint(0, 4, (B, T))

    def roll():
        torch.manual_seed(7)
        cache, out = None, []
        for t in range(T):
            logits, cache = model(states[:, t], None if t == 0 else actions[:, t - 1], return_cache=True, cache=cache)
            out.append((logits, cache.prev_hiddens.meta_controller.actions, cache.prev_hiddens.meta_controller.switched))
        return out

    plain = roll()
    vector = nn.utils.parameters_to_vector(mc.policy.parameters()).detach()
    policy = mc.policy
    mc.policy = PopulationPolicy(policy, vector.expand(P, -1).clone())
    try:
        population = roll()
    finally:
        mc.policy = policy
    switched = torch.stack([s for _, _, s in plain[1:]])
    assert switched.any() and not switched.all()
    for (l1, z1, s1), (l2, z2, s2) in zip(plain, population):
        assert torch.equal(s1, s2)
        torch.testing.assert_close(l2, l1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(z2, z1, rtol=1e-5, atol=1e-6)


def test_batched_evolve_checks_the_number_of_fitnesses():
    model = _model_pair()
    with pytest.raises(ValueError, match="fitnesses for 4 members"):
        model.evolve(1, lambda m: torch.zeros(5), population_size=4, batched=True)
