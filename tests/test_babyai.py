"""BabyAI: the batched env interface, the bot's demonstrations, and a smoke run of the pipeline."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("minigrid")

from internal_rl.data.trajectories import Trajectories  # noqa: E402
from internal_rl.envs.babyai import (  # noqa: E402
    IMAGE_BITS,
    N_DIRECTIONS,
    NUM_ACTIONS,
    SLOT_BITS,
    BabyAIEnvConfig,
    BatchedBabyAI,
    mission_clauses,
)
from internal_rl.experts.babyai_bot import BabyAIBotExpert, run_bot  # noqa: E402

SEEDS = [3, 1, 4, 1, 5, 9]


def test_importing_the_package_does_not_import_minigrid():
    code = ("import sys, internal_rl, internal_rl.envs.babyai, internal_rl.phases.babyai, internal_rl.cli; "
            "assert 'minigrid' not in sys.modules, 'minigrid imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reset_shapes_and_seeded_episodes():
    env = BatchedBabyAI(len(SEEDS), max_steps=20)
    assert env.config.obs_dim == IMAGE_BITS + N_DIRECTIONS + 4 * SLOT_BITS == 1044
    obs = env.reset(SEEDS)
    assert obs.shape == (len(SEEDS), 1044) and obs.dtype == np.float32
    assert set(np.unique(obs)) <= {0.0, 1.0}
    # Every view cell has exactly one object, one colour and one state bit; one direction bit.
    cells = obs[:, :IMAGE_BITS].reshape(len(SEEDS), 49, 20)
    assert (cells[..., :11].sum(-1) == 1).all() and (cells[..., 11:17].sum(-1) == 1).all()
    assert (cells[..., 17:].sum(-1) == 1).all()
    assert (obs[:, IMAGE_BITS:IMAGE_BITS + 4].sum(-1) == 1).all()
    # The same seed gives the same episode (layout and mission).
    np.testing.assert_array_equal(obs[1], obs[3])
    assert env.missions[1] == env.missions[3]
    assert not env.done.any() and (env.step_count == 0).all()
    again = BatchedBabyAI(len(SEEDS), max_steps=20).reset(SEEDS)
    np.testing.assert_array_equal(obs, again)
    # Drawn seeds are reproducible from `seed`.
    np.testing.assert_array_equal(env.reset(None, seed=7), env.reset(None, seed=7))
    with pytest.raises(ValueError):
        env.reset("0-1-2")
    with pytest.raises(ValueError):
        env.reset([1, 2])


def test_reset_in_groups_shares_seeds():
    env = BatchedBabyAI(4, max_steps=20)
    obs = env.reset(None, seed=3, group_size=2)
    seeds = env.episode_seeds.copy()
    assert seeds[0] == seeds[1] and seeds[2] == seeds[3] and seeds[0] != seeds[2]
    np.testing.assert_array_equal(obs[0], obs[1])
    env.reset([5, 5, 6, 6], group_size=2)
    with pytest.raises(ValueError, match="share their episode seed"):
        env.reset([5, 6, 6, 6], group_size=2)
    with pytest.raises(ValueError, match="positive divisor"):
        env.reset(None, group_size=3)


def test_hidden_mission_encoding():
    env = BatchedBabyAI(2, n_slots=0)
    assert env.reset([0, 1]).shape == (2, IMAGE_BITS + N_DIRECTIONS)


def test_step_truncation_and_finished_episodes_ignore_actions():
    n, T = 6, 6
    env = BatchedBabyAI(n, max_steps=T)
    env.reset(list(range(n)))
    for _ in range(T):  # turning on the spot: truncated after T steps unless it happens to face the target
        obs, r, term, trunc, _ = env.step(np.zeros(n, dtype=np.int64))
        assert obs.shape == (n, env.obs_dim) and r.shape == term.shape == trunc.shape == (n,)
        np.testing.assert_array_equal(r == 1, env.success)
    assert env.done.all() and env.truncated.any()
    assert (env.step_count[env.truncated] == T).all() and not env.success[env.truncated].any()
    assert not (env.terminated & env.truncated).any()
    before, steps = obs.copy(), env.step_count.copy()
    obs, r, term, trunc, _ = env.step(np.full(n, 2))
    np.testing.assert_array_equal(obs, before)
    assert (r == 0).all() and (env.step_count == steps).all() and env.done.all()
    env.reset(list(range(n)))
    with pytest.raises(ValueError):
        env.step(np.full(n, NUM_ACTIONS))
    with pytest.raises(ValueError):
        env.step(np.zeros(n + 1, dtype=np.int64))


def test_bot_demos_succeed_with_clause_subgoals():
    env = BatchedBabyAI(8, max_steps=64)
    r = run_bot(env, range(100, 108))
    assert r["success"].all() and not r["bot_failed"].any()
    assert env.success.all() and env.terminated.all()
    for i in range(8):
        L = r["lengths"][i]
        assert 1 <= L <= 64
        sg = r["subgoals"][i, :L]
        n_clauses = len(mission_clauses(env.envs[i].unwrapped.instrs))
        assert sg[0] == 0 and (np.diff(sg) >= 0).all() and sg.max() < n_clauses
        assert (r["subgoals"][i, L:] == -1).all() and (r["actions"][i, :L] < NUM_ACTIONS).all()
    # The bot's plan and the observation's slots list the clauses in the same (execution) order.
    env = BatchedBabyAI(20, max_steps=64)
    env.reset(list(range(20)))
    expert = BabyAIBotExpert()
    expert.reset(env)
    for e, clauses in zip(env.envs, expert.clauses):
        descs = [d for _, d in mission_clauses(e.unwrapped.instrs)]
        assert [(s.datum.color, s.datum.type) for s in reversed(clauses)] == [(d.color, d.type) for d in descs]


def test_noisy_bot_recovers():
    env = BatchedBabyAI(8, max_steps=64)
    r = run_bot(env, range(8), eps=0.2, rng=np.random.default_rng(0))
    assert r["success"].mean() >= 0.75


def test_generate_babyai_roundtrip(tmp_path):
    from internal_rl.data.babyai_dataset import generate_babyai

    tr = generate_babyai(10, BabyAIEnvConfig(max_steps=64), seed_start=0, batch_size=4, progress=False)
    assert len(tr) == 10 and tr.obs_dim == 1044 and tr.meta["success_rate"] == 1.0
    tr.save(tmp_path / "D")
    back = Trajectories.load(tmp_path / "D")
    b = back.batch(np.arange(3))
    assert b["obs"].shape[-1] == 1044 and b["actions"].shape == b["subgoals"].shape
    np.testing.assert_array_equal(back.actions_flat, tr.actions_flat)


def test_smoke_pipeline_via_cli(tmp_path):
    from internal_rl.cli import main

    main(["babyai", "--preset", "smoke", "--out", str(tmp_path / "run")])
    res = json.loads((tmp_path / "run" / "babyai_results.json").read_text())
    for key in ("bot", "bc_model", "internal_rl_at_init", "internal_rl_grpo", "internal_rl_es"):
        assert 0.0 <= res["success"][key] <= 1.0
    assert res["success"]["bot"] == 1.0
    for tol in ("tol0", "tol1", "tol2"):
        assert 0.0 <= res["segmentation"][tol]["f1"] <= 1.0
    assert len(res["internal_rl_grpo"]["curve"]) == 2
    assert (tmp_path / "run" / "rl_grpo" / "policy.safetensors").exists()
    assert (tmp_path / "run" / "rl_es" / "policy.safetensors").exists()


def test_group_advantages():
    import torch

    from internal_rl.rl.ppo import episode_advantages

    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    adv = episode_advantages(r, 1e-3, group_size=2)
    assert torch.allclose(adv[:2], torch.tensor([1.0, -1.0]), atol=1e-2)
    assert torch.equal(adv[2:], torch.zeros(4))
