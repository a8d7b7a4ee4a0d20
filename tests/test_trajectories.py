"""Tests for the trajectory format, its storage, and pinpad dataset generation."""

import json

import numpy as np
import pytest
import torch

from internal_rl.data.pinpad_dataset import generate_pinpad
from internal_rl.data.trajectories import Trajectories
from internal_rl.envs.pinpad import POST_TRAINING_TASK, PRETRAINING_TASKS, BatchedPinPad


@pytest.fixture(scope="module")
def small():
    return generate_pinpad(64, eps=0.1, seed=0, batch_size=32, progress=False)


def test_generate_shapes_alignment_and_padding(small):
    tr = small
    n, t = len(tr), tr.max_len
    assert n == 64 and tr.actions.shape == (64, t) and tr.subgoals.shape == (64, t)
    assert tr.obs.shape == (64, t + 1, 80) and tr.obs.dtype == np.uint8 and tr.obs_encoding == "packbits"
    assert t == tr.lengths.max()
    m = tr.mask()
    assert m.dtype == bool and np.array_equal(m.sum(1), tr.lengths)
    assert np.all(tr.actions[~m] == 0) and np.all(tr.subgoals[~m] == -1)
    assert np.all((tr.subgoals[m] >= 0) & (tr.subgoals[m] < 4)) and np.all((tr.actions[m] >= 0) & (tr.actions[m] < 4))
    assert set(tr.tasks) <= set(PRETRAINING_TASKS)
    assert tr.meta["eps"] == 0.1 and tr.meta["config"]["grid"] == 7
    # Decoded observations: exactly one agent cell on every real frame (incl. the final one), zeros after.
    obs = tr.decode_obs()
    assert obs.shape == (64, t + 1, 637) and obs.dtype == np.float32
    agent = obs.reshape(64, t + 1, 49, 13)[..., -1].sum(-1)
    frames = np.arange(t + 1)[None, :] <= tr.lengths[:, None]
    assert np.all(agent[frames] == 1) and np.all(agent[~frames] == 0)
    # The first subgoal is the pair of the task's first colour.
    first = np.array([int(s.split("-")[0]) // 2 for s in tr.tasks])
    assert np.array_equal(tr.subgoals[:, 0], first)


def test_replaying_actions_reproduces_observations(small):
    tr = small
    obs = tr.decode_obs()
    env = BatchedPinPad(1)
    env.reset(tr.tasks[0])
    # Put episode 0's layout into the env from its first observation, then replay its actions.
    first = obs[0, 0].reshape(49, 13)
    env.color_cell[0] = first[:, :8].argmax(0)
    env.wall_cell[0] = first[:, 8:12].argmax(0)
    env.agent_cell[0] = first[:, 12].argmax()
    env.cell_color[0] = -1
    env.cell_color[0, env.color_cell[0]] = np.arange(8)
    env.cell_wall[0] = False
    env.cell_wall[0, env.wall_cell[0]] = True
    env._obs[0] = obs[0, 0]
    for t in range(tr.lengths[0]):
        assert env.subgoal[0] == tr.subgoals[0, t]
        o, *_ = env.step(tr.actions[0, t : t + 1])
        assert np.array_equal(o[0], obs[0, t + 1])
    assert env.done[0]


def test_batch_crops_and_types(small):
    idx = np.array([3, 1, 7])
    b = small.batch(idx)
    L = int(small.lengths[idx].max())
    assert b["obs"].shape == (3, L + 1, 637) and b["obs"].dtype == torch.float32
    assert b["actions"].shape == (3, L) and b["actions"].dtype == torch.long
    assert b["mask"].dtype == torch.bool and b["subgoals"].dtype == torch.long
    assert torch.equal(b["mask"].sum(1), b["lengths"])
    assert torch.equal(b["obs"], torch.from_numpy(small.decode_obs(idx)[:, : L + 1]))
    batches = list(small.iter_batches(10, seed=0))
    assert sum(len(x["lengths"]) for x in batches) == 64


def test_save_load_roundtrip_exact(small, tmp_path):
    small.save(tmp_path / "ds")
    back = Trajectories.load(tmp_path / "ds")
    for k in ("obs", "actions", "lengths", "subgoals"):
        a, b = getattr(small, k), getattr(back, k)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert back.tasks == small.tasks and back.meta == small.meta and back.obs_dim == 637
    np.testing.assert_array_equal(back.batch([0, 5])["obs"], small.batch([0, 5])["obs"])


@pytest.mark.parametrize("encoding", ["float16", "float32"])
def test_float_encodings_roundtrip(tmp_path, encoding):
    rng = np.random.default_rng(0)
    lengths = np.array([3, 1, 0])
    obs = rng.normal(size=(3, 4, 5)).astype(np.float32)
    actions = np.zeros((3, 3), dtype=np.int64)
    subgoals = np.full((3, 3), -1, dtype=np.int64)
    for i, n in enumerate(lengths):
        actions[i, :n] = rng.integers(1, 6, size=n)
        subgoals[i, :n] = 2
    tr = Trajectories.from_float_obs(obs, actions, lengths, subgoals, ["a", "b", "a"], obs_encoding=encoding,
                                     meta={"env": "toy"})
    tr.save(tmp_path / "f")
    back = Trajectories.load(tmp_path / "f")
    assert back.obs.dtype == np.dtype(encoding)
    np.testing.assert_array_equal(back.decode_obs(), obs.astype(encoding).astype(np.float32))
    assert back.tasks == ["a", "b", "a"]
    assert back.mask().tolist() == [[True] * 3, [True, False, False], [False] * 3]
    with pytest.raises(ValueError, match="binary"):
        Trajectories.from_float_obs(obs, actions, lengths, subgoals, ["a"] * 3, obs_encoding="packbits")


def test_split(small):
    train, held = small.split(0.25, seed=0)
    assert len(train) == 48 and len(held) == 16
    assert sorted(train.tasks + held.tasks) == sorted(small.tasks)
    assert train.num_steps + held.num_steps == small.num_steps
    t2, h2 = small.split(10, seed=1)
    assert len(h2) == 10 and len(t2) == 54
    assert held.max_len == held.lengths.max()
    with pytest.raises(ValueError, match="fraction"):
        small.split(1.5)
    with pytest.raises(ValueError, match="0..64"):
        small.split(65)


def _corrupt(path, file, array):
    np.save(path / file, array)


@pytest.mark.parametrize(
    "file,field,mutate,match",
    [
        ("actions.npy", "actions", lambda a: a[:, :-1], "shape"),
        ("actions.npy", "actions", lambda a: a.astype(np.int32), "dtype"),
        ("lengths.npy", "lengths", lambda a: a + 1000, "lengths must lie"),
        ("subgoals.npy", "subgoals", lambda a: np.zeros_like(a), "padding"),
        ("obs.npy", "obs", lambda a: a[:-1], "shape"),
        ("obs.npy", "obs", lambda a: a.astype(np.float32), "dtype"),
        ("task_ids.npy", "task_ids", lambda a: a + 100, "values must lie"),
    ],
)
def test_load_names_the_wrong_file_and_field(small, tmp_path, file, field, mutate, match):
    p = small.save(tmp_path / "ds")
    _corrupt(p, file, mutate(np.load(p / file)))
    with pytest.raises(ValueError, match=match) as e:
        Trajectories.load(p)
    assert file in str(e.value) and repr(field) in str(e.value)


def test_load_errors_on_missing_or_bad_files(small, tmp_path):
    p = small.save(tmp_path / "ds")
    (p / "subgoals.npy").unlink()
    with pytest.raises(ValueError, match=r"subgoals\.npy.*missing"):
        Trajectories.load(p)
    p = small.save(tmp_path / "ds2")
    (p / "actions.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"actions\.npy.*cannot be read"):
        Trajectories.load(p)
    p = small.save(tmp_path / "ds3")
    meta = json.loads((p / "meta.json").read_text())
    meta["obs_dim"] = 999
    (p / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta\.json.*arrays\.obs"):
        Trajectories.load(p)
    with pytest.raises(ValueError, match=r"meta\.json.*missing"):
        Trajectories.load(tmp_path / "nowhere")


def test_generate_post_training_and_errors():
    tr = generate_pinpad(16, eps=0.0, tasks=[POST_TRAINING_TASK], seed=1, progress=False)
    assert tr.meta["success_rate"] == 1.0 and set(tr.tasks) == {POST_TRAINING_TASK}
    with pytest.raises(ValueError, match="out of range"):
        generate_pinpad(4, tasks=["0-9"], progress=False)
    with pytest.raises(ValueError, match="num_episodes"):
        generate_pinpad(0, progress=False)


def test_run_data_writes_everything(tmp_path):
    from internal_rl.phases.data import DataConfig, run_data

    cfg = DataConfig(out=tmp_path / "data", num_episodes=200, num_episodes_star=100, eps=0.05, seed=0,
                     heldout_fraction=0.1, stats_episodes=1000, progress=False)
    stats = run_data(cfg)
    for name, n in (("D", 180), ("D_heldout", 20), ("D_star", 90), ("D_star_heldout", 10)):
        assert len(Trajectories.load(cfg.out / name)) == n
    on_disk = json.loads((cfg.out / "data_stats.json").read_text())
    assert on_disk["expert"]["pretraining"]["success_rate"] == 1.0
    assert on_disk["expert"]["post_training"]["success_rate"] == 1.0
    assert 0.1 < stats["expert"]["entropy_nats_per_step"] < 0.3
    assert Trajectories.load(cfg.out / "D_star").meta["eps"] == 0.0
