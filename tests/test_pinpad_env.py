"""Behaviour tests for gridworld-pinpad (batched core and gymnasium view)."""

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import internal_rl.envs  # noqa: F401  (registers the env)
from internal_rl.envs.pinpad import (
    POST_TRAINING_TASK,
    PRETRAINING_TASKS,
    SUBGOALS,
    BatchedPinPad,
    PinPadConfig,
    PinPadEnv,
    _distance_maps_grid,
    colour_entries,
    distance_maps,
    ending_histograms,
    parse_task,
)

G, O, W = 7, 8, 4  # noqa: E741
C = O + W + 1
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
DELTA = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}


def cells(obs):
    """(N, 637) -> (N, 49, 13)."""
    return obs.reshape(obs.shape[0], G * G, C)


def set_layout(env, i, colors, walls, start, task):
    """Overwrite env i's layout with hand-placed cells (row, col) and rebuild its observation."""
    env.reset(task, env_ids=[i])
    g = env.config.grid
    flat = lambda rc: rc[0] * g + rc[1]  # noqa: E731
    env.color_cell[i] = [flat(rc) for rc in colors]
    env.wall_cell[i] = [flat(rc) for rc in walls]
    env.agent_cell[i] = flat(start)
    env.cell_color[i] = -1
    env.cell_color[i, env.color_cell[i]] = np.arange(env.config.n_colors)
    env.cell_wall[i] = False
    env.cell_wall[i, env.wall_cell[i]] = True
    env.dist_to_color[i] = distance_maps(env.cell_color[i : i + 1], env.cell_wall[i : i + 1], g, env.config.n_colors)[0]
    o = np.zeros((g * g, env.config.n_channels), dtype=np.float32)
    o[env.color_cell[i], np.arange(env.config.n_colors)] = 1
    o[env.wall_cell[i], env.config.n_colors + np.arange(env.config.n_walls)] = 1
    o[env.agent_cell[i], env.config.agent_channel] = 1
    env._obs[i] = o.reshape(-1)


# Colours on row 0 (cols 0..6) and (1,0); walls at (3,0),(3,1),(3,2),(4,3); agent starts at (2,0).
LAYOUT = dict(
    colors=[(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (1, 6)],
    walls=[(3, 0), (3, 1), (3, 2), (4, 3)],
    start=(2, 0),
)


def hand_env(task="0-1"):
    env = BatchedPinPad(1, seed=0)
    env.reset(task)
    set_layout(env, 0, task=task, **LAYOUT)
    return env


def act(env, a):
    return env.step(np.array([a]))


def test_constants_and_parse_task():
    assert len(PRETRAINING_TASKS) == 16 and len(set(PRETRAINING_TASKS)) == 16
    assert PRETRAINING_TASKS[0] == "0-1-4-5-0-1" and PRETRAINING_TASKS[-1] == "6-7-4-5-2-3"
    assert POST_TRAINING_TASK == "0-1-2-3-4-5-6-7-0-1-2-3"
    assert SUBGOALS == ["0-1", "2-3", "4-5", "6-7"]
    for t in PRETRAINING_TASKS:
        p = parse_task(t)
        assert p.dtype == np.int64 and p.shape == (6,)
        assert np.all(p[0::2] % 2 == 0) and np.all(p[1::2] == p[0::2] + 1)
    assert parse_task("0-1-4-5").tolist() == [0, 1, 4, 5]


@pytest.mark.parametrize(
    "bad,match",
    [("", "empty"), ("0--1", "malformed"), ("0-1-", "malformed"), ("a-b", "malformed"), ("0-8", "out of range"),
     (" 0-1", "malformed"), ("-1-2", "malformed")],
)
def test_parse_task_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_task(bad)
    with pytest.raises(ValueError, match="out of range"):
        parse_task("0-3", n_colors=3)


def test_obs_layout_and_values():
    env = BatchedPinPad(256, seed=1)
    obs = env.reset()
    assert obs.shape == (256, 637) and obs.dtype == np.float32
    assert set(np.unique(obs).tolist()) <= {0.0, 1.0}
    c = cells(obs)
    assert np.all(c[:, :, :O].sum(1) == 1)  # each colour channel set in exactly one cell
    assert np.all(c[:, :, O : O + W].sum(1) == 1)  # each wall channel in exactly one cell
    assert np.all(c[:, :, -1].sum(1) == 1)  # exactly one agent cell
    assert np.all(c[:, :, :-1].sum(2) <= 1)  # colours and walls never overlap
    assert np.all(c[:, :, :-1].sum((1, 2)) == O + W)
    agent = c[:, :, -1].argmax(1)
    assert np.all(c[np.arange(256), agent, :-1].sum(1) == 0)  # the start is neither coloured nor a wall
    # State arrays agree with the observation.
    assert np.array_equal(agent, env.agent_cell)
    assert np.array_equal(env.agent_pos, np.stack(np.divmod(agent, G), -1))
    assert env.color_pos.shape == (256, O, 2) and env.wall_pos.shape == (256, W, 2)
    for k in range(O):
        assert np.all(c[np.arange(256), env.color_cell[:, k], k] == 1)
    assert np.all(np.isin(env.tasks, PRETRAINING_TASKS))
    assert env.progress.tolist() == [0] * 256 and env.step_count.tolist() == [0] * 256
    assert len(set(map(tuple, env.color_cell.tolist()))) > 200  # layouts differ across envs


def test_obs_is_row_col_channel():
    env = hand_env("0-1")
    o = env.obs[0].reshape(G, G, C)
    assert o[0, 0, 0] == 1 and o[0, 6, 6] == 1 and o[1, 6, 7] == 1
    assert o[3, 0, O] == 1 and o[4, 3, O + 3] == 1
    assert o[2, 0, -1] == 1 and o[..., -1].sum() == 1


def test_moves_walls_edges_and_agent_channel():
    env = hand_env("0-1")
    obs, r, term, trunc, _ = act(env, LEFT)  # off-grid: no-op
    assert env.agent_pos[0].tolist() == [2, 0] and not term[0] and r[0] == 0
    act(env, DOWN)  # wall at (3,0): no-op
    assert env.agent_pos[0].tolist() == [2, 0]
    obs, *_ = act(env, RIGHT)
    assert env.agent_pos[0].tolist() == [2, 1]
    o = obs[0].reshape(G, G, C)
    assert o[2, 1, -1] == 1 and o[..., -1].sum() == 1
    assert env.step_count[0] == 3


def test_visit_rules_success_and_subgoal():
    env = hand_env("0-1")
    assert env.subgoal[0] == 0
    obs, r, term, trunc, info = act(env, UP)  # (1,0): empty
    obs, r, term, trunc, info = act(env, UP)  # (0,0): colour 0, correct
    assert env.progress[0] == 1 and not term[0] and r[0] == 0 and info["subgoal"][0] == 0
    act(env, LEFT)  # off-grid no-op while standing on colour 0: not a re-visit
    act(env, UP)
    assert env.progress[0] == 1 and not env.done[0]
    obs, r, term, trunc, info = act(env, RIGHT)  # (0,1): colour 1 -> task done
    assert term[0] and not trunc[0] and r[0] == 1.0 and info["success"][0]
    assert r.dtype == np.float32


def test_wrong_colour_terminates_with_zero():
    env = hand_env("0-1")
    act(env, UP)
    obs, r, term, trunc, info = act(env, UP)  # colour 0
    act(env, DOWN)  # back to (1,0)
    obs, r, term, trunc, info = act(env, UP)  # re-entering colour 0 is a visit, and 0 is not next
    assert term[0] and r[0] == 0 and not info["success"][0]


def test_wrong_colour_names_the_colour_a_failed_episode_entered():
    cfg = PinPadConfig(max_steps=3, require_solvable_within_T=False)
    env = BatchedPinPad(3, cfg, seed=0)
    assert (env.wrong_colour == -1).all()  # before any reset
    env.reset("1-0")
    for i in range(3):
        set_layout(env, i, task=["1-0", "0-1", "0-1"][i], **LAYOUT)
    assert (env.wrong_colour == -1).all()
    env.step(np.array([UP, UP, DOWN]))
    env.step(np.array([UP, UP, DOWN]))  # env 0 enters colour 0 (1 was next); env 1 enters 0 correctly
    assert env.wrong_colour.tolist() == [0, -1, -1] and env.terminated[0]
    env.step(np.array([UP, RIGHT, DOWN]))  # env 1 succeeds on 1; env 2 is truncated at T = 3
    assert env.success[1] and env.truncated[2] and env.wrong_colour.tolist() == [0, -1, -1]
    h = ending_histograms(env.progress, env.wrong_colour, cfg.n_colors)
    assert h == {"progress_hist": [2, 0, 1], "wrong_colour_hist": [1, 0, 0, 0, 0, 0, 0, 0],
                 "wrong_colour_progress_hist": [1, 0, 0]}  # env 2's ending at 0 was a truncation


def test_start_cell_never_counts_and_reentry_counts():
    # Task "0-0" needs leaving colour 0 and re-entering it; standing on it does not count twice.
    env = hand_env("0-0")
    act(env, UP)
    act(env, UP)  # first visit of 0
    act(env, UP)  # no-op at the edge: no second visit
    assert env.progress[0] == 1 and not env.done[0]
    act(env, DOWN)
    obs, r, term, *_ = act(env, UP)
    assert term[0] and r[0] == 1


def test_subgoal_follows_progress():
    env = hand_env("2-3-0-1")
    set_layout(env, 0, task="2-3-0-1", **LAYOUT)
    assert env.subgoal[0] == 1
    for a in (UP, RIGHT, RIGHT, UP):  # (1,0)->(1,1)->(1,2)->(0,2)=colour 2
        _, _, term, _, info = act(env, a)
    assert not term[0] and env.progress[0] == 1 and info["subgoal"][0] == 1
    _, _, term, _, info = act(env, RIGHT)  # colour 3 -> next target 0, subgoal 0
    assert not term[0] and env.progress[0] == 2 and info["subgoal"][0] == 0


def test_truncation_at_T_and_done_envs_ignore_actions():
    cfg = PinPadConfig(max_steps=5, require_solvable_within_T=False)
    env = BatchedPinPad(3, cfg, seed=0)
    env.reset("0-1")
    set_layout(env, 0, task="0-1", **LAYOUT)
    for t in range(5):
        obs, r, term, trunc, _ = env.step(np.array([DOWN, 0, 0]))  # env 0 bumps into the wall forever
    assert trunc[0] and not term[0] and env.step_count[0] == 5 and env.done[0]
    before = obs.copy()
    obs, r, term, trunc, _ = env.step(np.array([RIGHT, 0, 0]))
    assert trunc[0] and r[0] == 0 and np.array_equal(obs[0], before[0]) and env.step_count[0] == 5
    obs = env.reset(env_ids=[0])
    assert not env.done[0] and env.step_count[0] == 0 and cells(obs)[0, :, -1].sum() == 1


def test_errors():
    env = BatchedPinPad(4, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4, dtype=int))
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        env.step(np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="0..3"):
        env.step(np.array([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="0..3"):
        env.step(np.array([0, 1, -1, 2]))
    with pytest.raises(ValueError, match="integers"):
        env.step(np.array([0.5, 1, 2, 3]))
    with pytest.raises(ValueError, match="got 3 tasks for 4 environments"):
        env.reset(["0-1"] * 3)
    with pytest.raises(ValueError, match="out of range"):
        env.reset("0-9")
    with pytest.raises(ValueError, match="num_envs"):
        BatchedPinPad(0)
    with pytest.raises(ValueError, match="do not fit"):
        PinPadConfig(grid=3, n_colors=8, n_walls=4)


def test_reset_seed_determinism_and_subset_reset():
    a, b = BatchedPinPad(16), BatchedPinPad(16)
    assert np.array_equal(a.reset(seed=3), b.reset(seed=3))
    env = BatchedPinPad(4, seed=0)
    obs0 = env.reset(["0-1-4-5-0-1"] * 4)
    obs1 = env.reset(POST_TRAINING_TASK, env_ids=[2])
    assert np.array_equal(obs0[[0, 1, 3]], obs1[[0, 1, 3]])
    assert env.tasks[2] == POST_TRAINING_TASK and env.task_len.tolist() == [6, 6, 12, 6]


def test_bitset_bfs_matches_grid_bfs():
    env = BatchedPinPad(64, seed=0)
    env.reset()
    a = distance_maps(env.cell_color, env.cell_wall, G, O)
    b = _distance_maps_grid(env.cell_color, env.cell_wall, G, O)
    assert np.array_equal(a, b)
    # Against a hand count: from colour 0 at (0,0), (2,0) is 2 steps away in LAYOUT.
    h = hand_env("0-1")
    assert h.dist_to_color[0, 0, 2 * G + 0] == 2
    assert h.dist_to_color[0, 0, 0 * G + 1] > 1000  # another colour is an obstacle


def test_other_sizes_work():
    cfg = PinPadConfig(grid=9, n_colors=4, n_walls=2, max_steps=50)
    env = BatchedPinPad(8, cfg, seed=0)
    obs = env.reset(["0-1-2-3"] * 8)
    assert obs.shape == (8, 81 * 7)
    env.step(np.zeros(8, dtype=int))


def test_gym_env_checker_and_registration():
    env = gymnasium.make("internal_rl/GridPinPad-v0")
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space.shape == (637,) and env.action_space.n == 4
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and {"subgoal", "success"} <= info.keys()
    import importlib

    importlib.reload(internal_rl.envs)  # double registration must not fail


def test_gym_env_matches_batched_core():
    task = "2-3-6-7-4-5"
    env = PinPadEnv(task=task)
    obs, info = env.reset(seed=5)
    from gymnasium.utils import seeding

    core = BatchedPinPad(1)
    core.rng, _ = seeding.np_random(5)  # the generator gymnasium builds for seed 5
    obs_b = core.reset([task])
    assert np.array_equal(obs, obs_b[0])
    rng = np.random.default_rng(0)
    for _ in range(100):
        a = int(rng.integers(4))
        o1, r1, te1, tr1, i1 = env.step(a)
        o2, r2, te2, tr2, i2 = core.step(np.array([a]))
        assert np.array_equal(o1, o2[0]) and r1 == r2[0] and te1 == te2[0] and tr1 == tr2[0]
        assert i1["subgoal"] == i2["subgoal"][0] and i1["success"] == i2["success"][0]
        if te1 or tr1:
            break
    with pytest.raises(ValueError, match="0..3"):
        env.step(7)
    with pytest.raises(ValueError, match="malformed"):
        PinPadEnv(task="0_1")


def test_layout_filter_within_T_and_empty_reset():
    from internal_rl.experts.pinpad_expert import ShortestPathExpert

    env = BatchedPinPad(300, PinPadConfig(max_steps=30), seed=0)
    env.reset()
    expert, rng = ShortestPathExpert(0.0), np.random.default_rng(0)
    while not env.done.all():
        env.step(expert.act(env, rng))
    assert env.success.all() and env.step_count.max() <= 30
    obs = env.reset(env_ids=[])
    assert obs.shape == (300, 637)


def test_gym_reset_options_task():
    env = PinPadEnv()
    env.reset(seed=0, options={"task": POST_TRAINING_TASK})
    assert env.core.tasks[0] == POST_TRAINING_TASK
    env.reset()
    assert env.core.tasks[0] in PRETRAINING_TASKS


def _shortest_route(cell_color, cell_wall, start, task, grid):
    """Fewest actions completing ``task`` from ``start``, by plain BFS on the grid (None if impossible).

    Rules as the env defines them: a move into a wall or off the grid is a no-op (never useful); entering a
    coloured cell visits it, and a colour that is not next ends the episode, so each leg avoids every coloured
    cell but its target. Once colour k is visited the agent stands on its cell, so the shortest route is the sum
    of the shortest legs; a leg must enter its target by a move (standing on it does not count).
    """
    total, here = 0, start
    for colour in task:
        goal = int(np.flatnonzero(cell_color == colour)[0])
        dist, queue, found = {here: 0}, [here], None
        for cell in queue:  # the list grows while we walk it: FIFO order
            r, c = divmod(cell, grid)
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                nr, nc = r + dr, c + dc
                if not (0 <= nr < grid and 0 <= nc < grid):
                    continue
                nxt = nr * grid + nc
                if nxt == goal:
                    found = dist[cell] + 1
                    break
                if cell_wall[nxt] or cell_color[nxt] >= 0 or nxt in dist:
                    continue
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
            if found is not None:
                break
        if found is None:
            return None
        total, here = total + found, goal
    return total


@pytest.mark.parametrize(
    "max_steps,tasks",
    [(100, POST_TRAINING_TASK), (100, None), (30, "0-1-2-3-4-5-6-7"), (20, "6-7-2-3-0-1")],
)
def test_layouts_are_solvable(max_steps, tasks):
    """Every sampled layout's task can be completed within T actions: an independent BFS over the grid (walls
    block, wrong colours are forbidden) finds a route of at most T steps from the start cell. With a tight T,
    the same check on unfiltered layouts finds routes longer than T, so it is the env's filter that passes it."""

    def routes(config):
        env = BatchedPinPad(512, config, seed=11)
        env.reset(tasks)
        return [_shortest_route(env.cell_color[i], env.cell_wall[i], int(env.agent_cell[i]),
                                parse_task(env.tasks[i]), G) for i in range(env.num_envs)]

    lengths = routes(PinPadConfig(max_steps=max_steps))
    assert None not in lengths and max(lengths) <= max_steps
    if max_steps < 100:
        unfiltered = routes(PinPadConfig(max_steps=max_steps, require_solvable_within_T=False))
        assert sum(n is not None and n > max_steps for n in unfiltered) > 100


def test_shortest_route_reference_on_hand_layout():
    """The BFS reference on LAYOUT, against routes counted by hand (start (2,0), colours 0..6 on row 0)."""
    env = hand_env("0-1")
    route = lambda task: _shortest_route(env.cell_color[0], env.cell_wall[0], 2 * G, parse_task(task), G)  # noqa: E731
    assert route("0-1") == 3  # up, up, right
    assert route("0-0") == 4  # up, up, then down and up again to re-enter 0
    assert route("0-2") == 6  # colour 1 at (0,1) blocks: (1,0), (1,1), (1,2), then up into (0,2)
    assert route("1") == 3  # (1,0), (1,1), up into (0,1)
    assert route("6") is None  # (0,6) is boxed in by colour 5 at (0,5) and colour 7 at (1,6)


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_colour_entries_are_the_visits_the_env_counts(eps):
    """Read from observations alone, colour entries are exactly the steps at which the env's progress grows
    (ε-noisy moves include no-ops on a coloured cell, which are no visit)."""
    from internal_rl.experts.pinpad_expert import ShortestPathExpert

    env = BatchedPinPad(64, PinPadConfig(), seed=1)
    frames, progress, live = [env.reset().copy()], [env.progress.copy()], []
    expert, rng = ShortestPathExpert(eps), np.random.default_rng(0)
    while not env.done.all():
        live.append(~env.done)
        obs, *_ = env.step(expert.act(env, rng))
        frames.append(obs.copy())
        progress.append(env.progress.copy())
    obs = np.stack(frames, axis=1)  # (N, T+1, 637)
    grew = np.diff(np.stack(progress, axis=1), axis=1) > 0  # (N, T): visit made by the step into frame t+1
    entries = colour_entries(obs)
    assert entries.shape == obs.shape[:2] and not entries[:, 0].any()
    live = np.stack(live, axis=1)
    np.testing.assert_array_equal(entries[:, 1:] & live, grew)
    assert grew.sum() > 64 * 3  # visits happened, pretraining tasks have six each
    np.testing.assert_array_equal(colour_entries(obs[5]), entries[5])  # one episode (T, D) works too
    with pytest.raises(ValueError, match="637"):
        colour_entries(obs[..., :-1])
