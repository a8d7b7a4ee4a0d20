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
    # flat storage: L actions/subgoals and L+1 observations per episode, back to back
    s = int(tr.lengths.sum())
    assert tr.num_steps == s and tr.actions_flat.shape == (s,) and tr.subgoals_flat.shape == (s,)
    assert tr.obs_flat.shape == (s + 64, 80) and tr.obs_flat.dtype == np.uint8
    assert np.array_equal(np.diff(tr.step_offsets), tr.lengths) and np.array_equal(np.diff(tr.obs_offsets), tr.lengths + 1)
    assert np.array_equal(tr.actions[tr.mask()], tr.actions_flat) and np.array_equal(tr.subgoals[tr.mask()], tr.subgoals_flat)
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
    obs, actions, subgoals = tr.decode_obs(), tr.actions, tr.subgoals
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
        assert env.subgoal[0] == subgoals[0, t]
        o, *_ = env.step(actions[0, t : t + 1])
        assert np.array_equal(o[0], obs[0, t + 1])
    assert env.done[0]


def _padded_reference(tr):
    """Padded (obs float, actions, subgoals) of every episode, built episode by episode from the flat arrays."""
    n, t = len(tr), tr.max_len
    obs = np.zeros((n, t + 1, tr.obs_dim), dtype=np.float32)
    actions, subgoals = np.zeros((n, t), dtype=np.int64), np.full((n, t), -1, dtype=np.int64)
    s = o = 0
    for i, length in enumerate(tr.lengths.tolist()):
        stored = np.asarray(tr.obs_flat[o : o + length + 1])
        obs[i, : length + 1] = (np.unpackbits(stored, axis=-1, count=tr.obs_dim) if tr.obs_encoding == "packbits"
                                else stored.astype(np.float32))
        actions[i, :length], subgoals[i, :length] = tr.actions_flat[s : s + length], tr.subgoals_flat[s : s + length]
        s, o = s + length, o + length + 1
    return obs, actions, subgoals


def _assert_batch(b, ref, idx):
    obs, actions, subgoals = ref
    idx = np.asarray(idx)
    lengths = b["lengths"].numpy()
    L = int(lengths.max()) if lengths.size else 0
    assert b["obs"].shape == (len(idx), L + 1, obs.shape[-1]) and b["obs"].dtype == torch.float32
    assert b["actions"].shape == (len(idx), L) and b["actions"].dtype == torch.long
    assert b["subgoals"].shape == (len(idx), L) and b["subgoals"].dtype == torch.long
    assert b["mask"].shape == (len(idx), L) and b["mask"].dtype == torch.bool and b["lengths"].dtype == torch.long
    np.testing.assert_array_equal(b["obs"].numpy(), obs[idx, : L + 1])
    np.testing.assert_array_equal(b["actions"].numpy(), actions[idx, :L])
    np.testing.assert_array_equal(b["subgoals"].numpy(), subgoals[idx, :L])
    np.testing.assert_array_equal(b["mask"].numpy(), np.arange(L)[None, :] < lengths[:, None])


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
    ref = _padded_reference(small)
    for idx in ([3, 1, 7], [5], np.arange(64), [2, 2, -1], np.array([], dtype=np.int64)):
        _assert_batch(small.batch(idx), ref, np.arange(64)[idx])
    _assert_batch(small.batch(slice(10, 20)), ref, np.arange(10, 20))


def test_padding_mask_and_values():
    # Episodes of lengths 0, 1, 4, 2 with nonzero data everywhere real: padding must be exactly 0 / -1 / 0.
    lengths = np.array([0, 1, 4, 2])
    rng = np.random.default_rng(1)
    obs = rng.integers(0, 2, size=(4, 5, 11)).astype(np.float32)
    obs[:, :, 0] = 1.0
    actions, subgoals = np.zeros((4, 4), dtype=np.int64), np.full((4, 4), -1, dtype=np.int64)
    for i, n in enumerate(lengths):
        actions[i, :n], subgoals[i, :n] = rng.integers(1, 5, size=n), rng.integers(0, 3, size=n)
    tr = Trajectories.from_float_obs(obs, actions, lengths, subgoals, ["t"] * 4)
    assert tr.obs_flat.shape == (7 + 4, 2) and tr.max_len == 4
    b = tr.batch([0, 1, 3])  # L = 2
    assert b["mask"].tolist() == [[False, False], [True, False], [True, True]]
    assert b["actions"][~b["mask"]].eq(0).all() and b["subgoals"][~b["mask"]].eq(-1).all()
    frames = np.arange(3)[None, :] <= np.array([0, 1, 2])[:, None]  # o_0..o_length are real
    assert b["obs"][..., 0].numpy().astype(bool).tolist() == frames.tolist()
    np.testing.assert_array_equal(b["obs"].numpy()[frames], obs[[0, 1, 3], :3][frames])
    assert np.array_equal(tr.mask(), np.arange(4)[None, :] < lengths[:, None])
    np.testing.assert_array_equal(tr.actions, actions)
    np.testing.assert_array_equal(tr.subgoals, subgoals)
    # decode_obs: cropping like [:t_end], scalar index, zero padding
    assert tr.decode_obs(t_end=2).shape == (4, 2, 11) and tr.decode_obs(t_end=99).shape == (4, 5, 11)
    np.testing.assert_array_equal(tr.decode_obs(2), obs[2])
    np.testing.assert_array_equal(tr.decode_obs([0])[0, 1:], 0)
    with pytest.raises(IndexError):
        tr.batch([4])


def test_save_load_roundtrip_exact(small, tmp_path):
    small.save(tmp_path / "ds")
    back = Trajectories.load(tmp_path / "ds")
    assert isinstance(back.obs_flat, np.memmap)  # observations stay on disk
    for k in ("obs_flat", "actions_flat", "lengths", "subgoals_flat", "step_offsets", "obs_offsets",
              "obs", "actions", "subgoals"):
        a, b = getattr(small, k), getattr(back, k)
        assert a.dtype == b.dtype and np.array_equal(a, b), k
    assert back.tasks == small.tasks and back.meta == small.meta and back.obs_dim == 637
    assert back.max_len == small.max_len and back.num_steps == small.num_steps
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["format_version"] == 2 and meta["num_steps"] == small.num_steps
    ref = _padded_reference(small)
    rng = np.random.default_rng(0)
    for idx in (np.arange(64), [0, 5], rng.integers(0, 64, 17)):
        for name in ("obs", "actions", "mask", "subgoals", "lengths"):
            assert torch.equal(back.batch(idx)[name], small.batch(idx)[name]), name
        _assert_batch(back.batch(idx), ref, idx)
    # Saving over the folder it is memory-mapped from keeps the data intact.
    back.save(tmp_path / "ds")
    again = Trajectories.load(tmp_path / "ds", mmap=False)
    assert not isinstance(again.obs_flat, np.memmap) and np.array_equal(again.obs_flat, small.obs_flat)
    _assert_batch(again.batch(np.arange(64)), ref, np.arange(64))


def test_roundtrip_equals_original_padded_data(tmp_path):
    # Random binary episodes built from padded arrays come back exactly (real frames; zeros as padding).
    rng = np.random.default_rng(3)
    n, t_max, d = 50, 30, 45
    lengths = rng.integers(0, t_max + 1, size=n)
    lengths[0] = 0
    obs = rng.integers(0, 2, size=(n, t_max + 1, d)).astype(np.float32)
    obs[np.arange(t_max + 1)[None, :] > lengths[:, None]] = 0.0
    steps = np.arange(t_max)[None, :] < lengths[:, None]
    actions = np.where(steps, rng.integers(0, 4, size=(n, t_max)), 0)
    subgoals = np.where(steps, rng.integers(0, 4, size=(n, t_max)), -1)
    tr = Trajectories.from_float_obs(obs, actions, lengths, subgoals, [f"t{i % 3}" for i in range(n)])
    back = Trajectories.load(tr.save(tmp_path / "r"))
    L = int(lengths.max())
    for ds in (tr, back):
        b = ds.batch(np.arange(n))
        np.testing.assert_array_equal(b["obs"].numpy(), obs[:, : L + 1])
        np.testing.assert_array_equal(b["actions"].numpy(), actions[:, :L])
        np.testing.assert_array_equal(b["subgoals"].numpy(), subgoals[:, :L])
        np.testing.assert_array_equal(b["mask"].numpy(), steps[:, :L])
        np.testing.assert_array_equal(ds.decode_obs(), obs[:, : L + 1])
    assert back.tasks == tr.tasks


def test_on_disk_size_smaller_than_padded(small, tmp_path):
    p = small.save(tmp_path / "ds")
    on_disk = sum(f.stat().st_size for f in p.iterdir())
    n, t, s = len(small), small.max_len, small.num_steps
    padded = n * (t + 1) * 80 + 2 * n * t * 8 + 2 * n * 8  # obs + actions + subgoals + lengths + task_ids
    flat = (s + n) * 80 + 2 * s * 8 + 2 * n * 8
    assert on_disk < padded
    assert on_disk - flat < 5000  # headers and meta.json only
    assert (p / "obs_flat.npy").stat().st_size - (s + n) * 80 < 200


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
    assert back.obs_flat.dtype == np.dtype(encoding) and back.obs_flat.shape == (4 + 3, 5)
    frames = np.arange(4)[None, :] <= lengths[:, None]
    expected = np.where(frames[..., None], obs.astype(encoding).astype(np.float32), 0.0)  # beyond o_length: 0
    np.testing.assert_array_equal(back.decode_obs(), expected)
    assert back.tasks == ["a", "b", "a"]
    assert back.mask().tolist() == [[True] * 3, [True, False, False], [False] * 3]
    with pytest.raises(ValueError, match="binary"):
        Trajectories.from_float_obs(obs, actions, lengths, subgoals, ["a"] * 3, obs_encoding="packbits")
    bad = actions.copy()
    bad[1, 2] = 4
    with pytest.raises(ValueError, match="actions: padding"):
        Trajectories.from_float_obs(obs, bad, lengths, subgoals, ["a"] * 3, obs_encoding=encoding)


def test_constructor_wants_flat_arrays(small):
    with pytest.raises(ValueError, match="from_padded"):
        Trajectories(small.obs, small.actions_flat, small.lengths, small.subgoals_flat, small.tasks, obs_dim=637)
    with pytest.raises(ValueError, match="actions_flat"):
        Trajectories(small.obs_flat, small.actions, small.lengths, small.subgoals_flat, small.tasks, obs_dim=637)
    tr = Trajectories.from_padded(small.obs, small.actions, small.lengths, small.subgoals, small.tasks, obs_dim=637)
    assert np.array_equal(tr.obs_flat, small.obs_flat) and np.array_equal(tr.actions_flat, small.actions_flat)


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
    # subset keeps the episodes' data, in the order asked for
    idx = np.array([9, 2, 40, 2])
    sub = small.subset(idx)
    for name, value in sub.batch(np.arange(4)).items():
        assert torch.equal(value, small.batch(idx)[name]), name
    perm = np.random.default_rng(0).permutation(64)
    held_idx = np.sort(perm[:16])
    assert torch.equal(held.batch(np.arange(16))["obs"], small.batch(held_idx)["obs"])


def _corrupt(path, file, array):
    np.save(path / file, array)


def _move_step(a):  # shift one step between episodes 0 and 1, making a length negative but keeping the sum
    a = a.copy()
    a[1] += a[0] + 1
    a[0] = -1
    return a


@pytest.mark.parametrize(
    "file,field,mutate,match",
    [
        ("actions_flat.npy", "actions_flat", lambda a: a[:-1], "shape"),
        ("actions_flat.npy", "actions_flat", lambda a: a.astype(np.int32), "dtype"),
        ("actions_flat.npy", "actions_flat", lambda a: a - 10, "negative action"),
        ("lengths.npy", "lengths", lambda a: a + 1000, "lengths sum to"),
        ("lengths.npy", "lengths", _move_step, "must be >= 0"),
        ("lengths.npy", "lengths", lambda a: a[:-1], "shape"),
        ("subgoals_flat.npy", "subgoals_flat", lambda a: a - 5, "subgoal ids must be >= -1"),
        ("subgoals_flat.npy", "subgoals_flat", lambda a: a[1:], "shape"),
        ("obs_flat.npy", "obs_flat", lambda a: a[:-1], "shape"),
        ("obs_flat.npy", "obs_flat", lambda a: a.astype(np.float32), "dtype"),
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
    (p / "subgoals_flat.npy").unlink()
    with pytest.raises(ValueError, match=r"subgoals_flat\.npy.*missing"):
        Trajectories.load(p)
    p = small.save(tmp_path / "ds2")
    (p / "actions_flat.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"actions_flat\.npy.*cannot be read"):
        Trajectories.load(p)
    p = small.save(tmp_path / "ds3")
    meta = json.loads((p / "meta.json").read_text())
    meta["obs_dim"] = 999
    (p / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta\.json.*arrays\.obs_flat"):
        Trajectories.load(p)
    meta["obs_dim"], meta["num_steps"] = 637, meta["num_steps"] + 1
    (p / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta\.json.*arrays\.obs_flat"):
        Trajectories.load(p)
    with pytest.raises(ValueError, match=r"meta\.json.*missing"):
        Trajectories.load(tmp_path / "nowhere")


def test_load_refuses_the_old_padded_format(small, tmp_path):
    # A version-1 folder (padded arrays, meta 'version': 1) asks for the data to be regenerated.
    p = tmp_path / "old"
    p.mkdir()
    np.save(p / "obs.npy", small.obs)
    np.save(p / "actions.npy", small.actions)
    (p / "meta.json").write_text(json.dumps({"format": "internal_rl.trajectories", "version": 1,
                                             "num_episodes": 64, "max_len": small.max_len}))
    with pytest.raises(ValueError, match=r"meta\.json.*'format_version' is 1.*regenerate"):
        Trajectories.load(p)


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
