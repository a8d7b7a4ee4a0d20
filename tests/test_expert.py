"""Behaviour tests for the gridworld-pinpad shortest-path expert."""

import numpy as np
import pytest

from internal_rl.envs.pinpad import _UNREACHABLE, POST_TRAINING_TASK, BatchedPinPad, PinPadConfig
from internal_rl.experts.pinpad_expert import ShortestPathExpert, policy_entropy


def rollout(env, expert, rng, check=None):
    while not env.done.all():
        if check is not None:
            check(env)
        env.step(expert.act(env, rng))


def test_eps0_solves_every_pretraining_episode_and_never_touches_wrong_colour():
    env = BatchedPinPad(2000, seed=0)
    env.reset()
    expert = ShortestPathExpert(0.0)
    rng = np.random.default_rng(0)

    def check(env):
        live = ~env.done
        a = expert.act(env, np.random.default_rng(1))
        nxt, moves = expert._next_cells(env)
        colour = env.cell_color[np.arange(env.num_envs), nxt[np.arange(env.num_envs), a]]
        stepped = moves[np.arange(env.num_envs), a]
        bad = live & stepped & (colour >= 0) & (colour != env.target_color)
        assert not bad.any()
        assert np.all(stepped[live])  # the ε=0 expert always moves

    rollout(env, expert, rng, check)
    assert env.success.all()
    assert env.step_count.max() <= 100


def test_eps0_solves_every_post_training_episode():
    env = BatchedPinPad(1000, seed=1)
    env.reset(POST_TRAINING_TASK)
    rollout(env, ShortestPathExpert(0.0), np.random.default_rng(0))
    assert env.success.all()


def test_expert_takes_a_shortest_route():
    # Path length of the expert equals the BFS route length computed at reset.
    from internal_rl.envs.pinpad import route_lengths

    env = BatchedPinPad(64, seed=2)
    env.reset()
    expected = route_lengths(env.dist_to_color, env.agent_cell.copy(), env.color_cell, env.task_array, env.task_len,
                             env.config.grid)
    rollout(env, ShortestPathExpert(0.0), np.random.default_rng(0))
    assert np.array_equal(env.step_count, expected)


def test_action_probs_are_uniform_over_optimal_moves():
    env = BatchedPinPad(256, seed=3)
    env.reset()
    p = ShortestPathExpert(0.0).action_probs(env)
    assert p.shape == (256, 4)
    np.testing.assert_allclose(p.sum(1), 1.0)
    nz = p[p > 0].reshape(-1)
    # Each row is uniform over its support (1, 2 moves can be optimal on a grid).
    for row in p:
        s = row[row > 0]
        np.testing.assert_allclose(s, s[0])
    assert nz.size >= 256
    ent = policy_entropy(p)
    assert np.all(ent >= 0) and np.all(ent <= np.log(2) + 1e-9)
    assert ent.mean() > 0.05  # it is genuinely stochastic


def test_eps_noise_never_terminates_by_a_random_action():
    env = BatchedPinPad(300, PinPadConfig(max_steps=60), seed=4)
    env.reset()
    rollout(env, ShortestPathExpert(1.0), np.random.default_rng(0))
    # With ε=1 every action is random but safe: episodes end only by success or truncation.
    failed = env.terminated & ~env.success
    assert not failed.any()
    assert env.truncated.any()


def test_eps_noise_never_traps_the_expert():
    """A random move may not cut the agent off from its target (a pocket behind a just-visited colour): the
    target stays reachable at every step, so no ε-noisy episode ends on a wrong colour."""
    expert, rng = ShortestPathExpert(0.5), np.random.default_rng(0)
    env = BatchedPinPad(1000, PinPadConfig(max_steps=100), seed=6)
    env.reset()
    rows = np.arange(env.num_envs)
    while not env.done.all():
        live = ~env.done
        nxt, moves = expert._next_cells(env)
        d = np.where(moves, env.dist_to_color[rows[:, None], env.target_color[:, None], nxt], _UNREACHABLE)
        assert (d.min(axis=1) < _UNREACHABLE)[live].all()  # some move still leads towards the target
        env.step(expert.act(env, rng))
    assert not (env.terminated & ~env.success).any()
    assert env.success.mean() > 0.8  # the rest run out of time (T = 100) at this much noise


def test_eps_noisy_expert_mostly_succeeds_and_is_reproducible():
    def run(seed):
        env = BatchedPinPad(200, seed=5)
        env.reset()
        rollout(env, ShortestPathExpert(0.2), np.random.default_rng(seed))
        return env.success.copy(), env.step_count.copy()

    s1, l1 = run(0)
    s2, l2 = run(0)
    assert np.array_equal(s1, s2) and np.array_equal(l1, l2)
    assert s1.mean() > 0.9


def test_eps_validation():
    with pytest.raises(ValueError, match=r"eps must lie in \[0, 1\]"):
        ShortestPathExpert(1.5)
