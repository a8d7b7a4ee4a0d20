"""Gridworld-pinpad (Kobayashi et al. 2025, App. A.1): visit coloured cells in a hidden order.

A G×G grid holds O uniquely coloured cells, W wall cells and the agent. A task is a string of
colours such as ``"0-1-4-5-0-1"``; the agent must *visit* them in that order. A coloured cell is
visited when the agent enters it from a different cell (the start cell never counts, a no-op move
into a wall or off the grid does not re-visit). Visiting the whole sequence ends the episode with
reward 1; visiting a colour that is not next ends it with reward 0; after ``max_steps`` actions
the episode is truncated. Colours, walls and the start cell are resampled every episode.

The observation is a flat float32 one-hot of length G·G·(O+W+1) (637 for the paper's sizes),
laid out as (row, col, channel): channels 0..O−1 are the colours, O..O+W−1 one channel per wall,
and the last channel is the agent. It carries NO task information.

``BatchedPinPad`` is the numpy core that steps N episodes at once; ``PinPadEnv`` is the
single-episode gymnasium view over it (registered as ``internal_rl/GridPinPad-v0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import gymnasium
import numpy as np
from einops import rearrange

# Actions: cardinal moves. Moving into a wall or off the grid is a no-op.
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
NUM_ACTIONS = 4
#: The gymnasium id of the single-episode view, also written into a pinpad dataset's meta as its `env`.
ENV_ID = "internal_rl/GridPinPad-v0"
ACTION_DELTAS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)  # (row, col)

#: The 16 pretraining tasks of the paper's table A1 (three colour-pair subgoals each).
PRETRAINING_TASKS: list[str] = [
    "0-1-4-5-0-1", "0-1-4-5-2-3", "0-1-6-7-2-3", "2-3-0-1-4-5",
    "2-3-6-7-2-3", "2-3-6-7-4-5", "4-5-0-1-4-5", "4-5-0-1-6-7",
    "4-5-2-3-6-7", "6-7-2-3-0-1", "6-7-2-3-6-7", "6-7-4-5-0-1",
    "0-1-6-7-4-5", "2-3-0-1-6-7", "4-5-2-3-0-1", "6-7-4-5-2-3",
]  # fmt: skip
#: The post-training task: six subgoals, made only of transitions never seen in pretraining.
POST_TRAINING_TASK: str = "0-1-2-3-4-5-6-7-0-1-2-3"
#: The abstract actions (subgoals) of the gridworld: colour pairs; subgoal id of colour c is c // 2.
SUBGOALS: list[str] = ["0-1", "2-3", "4-5", "6-7"]

_UNREACHABLE = np.iinfo(np.int32).max // 4  # "infinite" distance, safe to add a few of them


@dataclass(frozen=True)
class PinPadConfig:
    """Sizes of a gridworld-pinpad; the defaults are the paper's (G=7, O=8, W=4, T=100)."""

    grid: int = 7
    """Side G of the square grid."""
    n_colors: int = 8
    """Number O of uniquely coloured cells (colour ids 0..O-1)."""
    n_walls: int = 4
    """Number W of wall cells (each has its own observation channel)."""
    max_steps: int = 100
    """Episode length limit T (truncation after T actions)."""
    require_solvable_within_T: bool = True
    """Reject layouts whose shortest successful route (never stepping on a wrong colour) is longer
    than ``max_steps``. Without it about 0.35% of post-training layouts (measured) cannot be solved
    within T=100 even by the optimal expert. Layouts where the task is unreachable at all are always rejected."""

    def __post_init__(self) -> None:
        if self.grid < 2:
            raise ValueError(f"PinPadConfig.grid must be >= 2, got {self.grid}")
        if self.n_colors < 1 or self.n_walls < 0 or self.max_steps < 1:
            raise ValueError(
                f"PinPadConfig needs n_colors >= 1, n_walls >= 0, max_steps >= 1; got "
                f"n_colors={self.n_colors}, n_walls={self.n_walls}, max_steps={self.max_steps}"
            )
        if self.n_colors + self.n_walls + 1 > self.grid * self.grid:
            raise ValueError(
                f"PinPadConfig: {self.n_colors} colours + {self.n_walls} walls + 1 start cell do not fit "
                f"in a {self.grid}x{self.grid} grid"
            )

    @property
    def n_cells(self) -> int:
        """Number of grid cells G·G."""
        return self.grid * self.grid

    @property
    def n_channels(self) -> int:
        """Observation channels per cell: O colours + W walls + 1 agent."""
        return self.n_colors + self.n_walls + 1

    @property
    def obs_dim(self) -> int:
        """Length of the flat observation, G·G·(O+W+1)."""
        return self.n_cells * self.n_channels

    @property
    def agent_channel(self) -> int:
        """Index of the agent channel within a cell."""
        return self.n_colors + self.n_walls


_TASK_RE = re.compile(r"^\d+(-\d+)*$")


def parse_task(task: str, n_colors: int = 8) -> np.ndarray:
    """Parse a colour string like ``"0-1-4-5"`` into an int64 array, validating every colour."""
    if not isinstance(task, str):
        raise ValueError(f"task must be a string like '0-1-4-5', got {type(task).__name__}: {task!r}")
    if task == "":
        raise ValueError("task is empty; expected colours separated by '-', e.g. '0-1-4-5'")
    if not _TASK_RE.match(task):
        raise ValueError(
            f"malformed task {task!r}: expected non-negative integers separated by single '-', e.g. '0-1-4-5'"
        )
    colors = np.array([int(p) for p in task.split("-")], dtype=np.int64)
    bad = colors[(colors < 0) | (colors >= n_colors)]
    if bad.size:
        raise ValueError(f"task {task!r} has colour {int(bad[0])} out of range 0..{n_colors - 1}")
    return colors


@lru_cache(maxsize=1024)
def _parse_task_cached(task: str, n_colors: int) -> tuple[int, ...]:
    return tuple(parse_task(task, n_colors).tolist())


@lru_cache(maxsize=16)
def _neighbour_table(grid: int) -> np.ndarray:
    """(G·G, 4) flat index of the cell reached by each action, ignoring walls (off-grid = stay)."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    nr = np.clip(rows[:, None] + ACTION_DELTAS[None, :, 0], 0, grid - 1)
    nc = np.clip(cols[:, None] + ACTION_DELTAS[None, :, 1], 0, grid - 1)
    table = (nr * grid + nc).astype(np.int64)
    table.flags.writeable = False
    return table


def distance_maps(cell_color: np.ndarray, cell_wall: np.ndarray, grid: int, n_colors: int) -> np.ndarray:
    """BFS distances (N, O, G·G) from every cell to each colour's cell, never crossing other colours.

    For target colour c the obstacles are the walls and every coloured cell other than c (stepping on
    one would end the episode). Obstacle and cut-off cells get a huge value; the target cell gets 0.
    A path from a cell x to c therefore has length min over moves a of 1 + dist[c, move(x, a)] (see
    ``route_lengths``), which also covers x being an obstacle itself (the agent stands on the colour
    it just visited). All N·O maps grow one BFS level at a time: as 64-bit cell sets when G·G <= 64
    (fast), otherwise with shifted boolean grids.
    """
    if grid * grid <= 64:
        return _distance_maps_bitset(cell_color, cell_wall, grid, n_colors)
    return _distance_maps_grid(cell_color, cell_wall, grid, n_colors)


def _to_bits(mask: np.ndarray) -> np.ndarray:
    """Pack a (..., cells<=64) bool array into (...,) uint64 cell sets (bit i = cell i)."""
    pad = np.zeros(mask.shape[:-1] + (64,), dtype=bool)
    pad[..., : mask.shape[-1]] = mask
    return np.packbits(pad, axis=-1, bitorder="little").view("<u8")[..., 0]


def _from_bits(bits: np.ndarray, n_cells: int) -> np.ndarray:
    """Unpack (...,) uint64 cell sets into a (..., n_cells) bool array."""
    as_bytes = np.ascontiguousarray(bits.astype("<u8"))[..., None].view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, bitorder="little")[..., :n_cells].astype(bool)


def _distance_maps_bitset(cell_color: np.ndarray, cell_wall: np.ndarray, grid: int, n_colors: int) -> np.ndarray:
    """``distance_maps`` for G·G <= 64 with each map's cell set held in one uint64."""
    n_cells = grid * grid
    col = np.arange(n_cells) % grid
    not_first_col = _to_bits(col > 0)
    not_last_col = _to_bits(col < grid - 1)
    full = _to_bits(np.ones(n_cells, dtype=bool))
    g = np.uint64(grid)
    one = np.uint64(1)
    free = _to_bits((cell_color < 0) & ~cell_wall)  # (N,)
    target = _to_bits(cell_color[:, None, :] == np.arange(n_colors)[None, :, None])  # (N, O)
    passable = free[:, None] | target
    reached = target.copy()
    frontier = target
    levels = []  # levels[d-1] = cells first reached at distance d
    grow, tmp = np.empty_like(target), np.empty_like(target)
    for _ in range(n_cells):
        # Cells with a neighbour in the frontier: right/left neighbours (bit i±1, same row), below/above (i±G).
        np.bitwise_and(np.right_shift(frontier, one, out=grow), not_last_col, out=grow)
        np.bitwise_or(grow, np.bitwise_and(np.left_shift(frontier, one, out=tmp), not_first_col, out=tmp), out=grow)
        np.bitwise_or(grow, np.right_shift(frontier, g, out=tmp), out=grow)
        np.bitwise_or(grow, np.bitwise_and(np.left_shift(frontier, g, out=tmp), full, out=tmp), out=grow)
        frontier = grow & passable & ~reached
        if not frontier.any():
            break
        levels.append(frontier)
        reached |= frontier
    # Binary digits of the distance: digit k is set on the cells of every level d with bit k of d set.
    n_digits = max(1, len(levels).bit_length())
    digits = np.zeros((n_digits,) + target.shape, dtype=np.uint64)
    if levels:
        stacked = np.stack(levels)
        d = np.arange(1, len(levels) + 1)
        for k in range(n_digits):
            digits[k] = np.bitwise_or.reduce(stacked[((d >> k) & 1) == 1], axis=0)
    weights = (1 << np.arange(n_digits, dtype=np.int32)).reshape(-1, 1, 1, 1)
    dist = (_from_bits(digits, n_cells) * weights).sum(axis=0, dtype=np.int32)
    dist[~_from_bits(reached, n_cells)] = _UNREACHABLE
    return dist


def _distance_maps_grid(cell_color: np.ndarray, cell_wall: np.ndarray, grid: int, n_colors: int) -> np.ndarray:
    """``distance_maps`` for any grid size, with boolean (N, O, G, G) frontiers."""
    colour_ids = np.arange(n_colors)[None, :, None]
    cc = cell_color[:, None, :]
    passable = (~cell_wall[:, None, :]) & ((cc < 0) | (cc == colour_ids))  # (N, O, cells)
    passable = rearrange(passable, "n o (r c) -> n o r c", r=grid)
    reached = rearrange(cc == colour_ids, "n o (r c) -> n o r c", r=grid)
    frontier = reached.copy()
    dist = np.zeros(reached.shape, dtype=np.int32)  # counts the levels a cell was still unreached
    grow = np.empty_like(reached)
    for _ in range(grid * grid):
        # Cells with a frontier neighbour: shift the frontier one cell in each direction.
        grow[:] = False
        grow[..., 1:, :] |= frontier[..., :-1, :]
        grow[..., :-1, :] |= frontier[..., 1:, :]
        grow[..., :, 1:] |= frontier[..., :, :-1]
        grow[..., :, :-1] |= frontier[..., :, 1:]
        frontier = grow & passable & ~reached
        dist += ~reached
        if not frontier.any():
            break
        reached |= frontier
    dist[~reached] = _UNREACHABLE
    return rearrange(dist, "n o r c -> n o (r c)")


def segment_lengths(dist: np.ndarray, start_cell: np.ndarray, color_cell: np.ndarray, grid: int) -> np.ndarray:
    """(N, O+1, O) fewest actions from colour a's cell (a = O: the start cell) to visit colour b.

    A segment must begin with a real move (a no-op is no visit), so its length is
    1 + min over moving neighbours y of dist[b, y]; huge if b cannot be reached.
    """
    n, n_colors = color_cell.shape
    sources = np.concatenate([color_cell, start_cell[:, None]], axis=1)  # (N, O+1)
    nbr = _neighbour_table(grid)[sources]  # (N, O+1, 4)
    d = dist[np.arange(n)[:, None, None, None], np.arange(n_colors)[None, None, None, :], nbr[..., None]]
    d = np.where((nbr != sources[..., None])[..., None], d, _UNREACHABLE)  # (N, O+1, 4, O)
    return np.minimum(1 + d.min(axis=2).astype(np.int64), _UNREACHABLE)


def route_lengths_from_segments(seg: np.ndarray, tasks: np.ndarray, task_len: np.ndarray) -> np.ndarray:
    """Shortest number of actions to complete each task (tasks (N, L) padded with -1), huge if impossible."""
    n, length = tasks.shape
    n_colors = seg.shape[2]
    live = np.arange(length)[None, :] < task_len[:, None]
    nxt = np.where(live, tasks, 0)
    prev = np.concatenate([np.full((n, 1), n_colors), nxt[:, :-1]], axis=1)
    steps = seg[np.arange(n)[:, None], prev, nxt]
    return np.minimum(np.where(live, steps, 0).sum(axis=1), _UNREACHABLE)


def route_lengths(
    dist: np.ndarray, start_cell: np.ndarray, color_cell: np.ndarray, tasks: np.ndarray, task_len: np.ndarray,
    grid: int,
) -> np.ndarray:
    """Shortest number of actions to complete each task from its start cell (huge if impossible)."""
    return route_lengths_from_segments(segment_lengths(dist, start_cell, color_cell, grid), tasks, task_len)


def colour_entries(obs: np.ndarray, cfg: PinPadConfig | None = None) -> np.ndarray:
    """(..., T) bool from observations (..., T, G·G·(O+W+1)): at step t ≥ 1 the agent stands on a coloured
    cell that it did not stand on at t − 1, i.e. the steps at which a colour is visited (read from the
    observations alone, for analysing where a metacontroller switches)."""
    cfg = cfg or PinPadConfig()
    obs = np.asarray(obs)
    if obs.ndim < 2 or obs.shape[-1] != cfg.obs_dim:
        raise ValueError(f"colour_entries needs observations (..., T, {cfg.obs_dim}) for this PinPadConfig, "
                         f"got shape {obs.shape}")
    cells = obs.reshape(*obs.shape[:-1], cfg.n_cells, cfg.n_channels) > 0.5
    agent = cells[..., cfg.agent_channel]  # (..., T, G·G)
    on_colour = (agent & cells[..., : cfg.n_colors].any(-1)).any(-1)
    cell = agent.argmax(-1)
    entered = np.zeros(on_colour.shape, dtype=bool)
    entered[..., 1:] = on_colour[..., 1:] & (cell[..., 1:] != cell[..., :-1])
    return entered


def ending_histograms(progress: np.ndarray, wrong_colour: np.ndarray, n_colors: int = 8) -> dict[str, list[int]]:
    """Where episodes ended: `progress_hist[k]` counts those that ended after k correct colours (success,
    failure or truncation), `wrong_colour_hist[c]` the failed ones that ended by entering colour c, and
    `wrong_colour_progress_hist[k]` those failed ones by k (the rest of progress_hist[k] ran out of time
    or, at the task's length, succeeded)."""
    progress, wrong = np.asarray(progress, dtype=np.int64), np.asarray(wrong_colour)
    n = int(progress.max()) + 1 if progress.size else 0
    return {"progress_hist": np.bincount(progress, minlength=n).tolist(),
            "wrong_colour_hist": np.bincount(wrong[wrong >= 0], minlength=n_colors).tolist(),
            "wrong_colour_progress_hist": np.bincount(progress[wrong >= 0], minlength=n).tolist()}


class BatchedPinPad:
    """Numpy core stepping ``num_envs`` pinpad episodes at once (no python loop over envs).

    There is no auto-reset: once an episode is done (terminated or truncated) it ignores its
    actions, returns reward 0 and keeps reporting the same terminated/truncated flags until it is
    reset (``reset`` for all, or ``reset(..., env_ids=...)`` for some).

    State arrays (read-only by convention, all batched over envs):
      ``agent_cell`` (N,) flat cell index r·G+c; ``agent_pos`` (N, 2) (row, col);
      ``color_pos`` (N, O, 2) / ``color_cell`` (N, O); ``wall_pos`` (N, W, 2) / ``wall_cell`` (N, W);
      ``cell_color`` (N, G·G) colour id in each cell or -1; ``cell_wall`` (N, G·G) bool;
      ``task_array`` (N, Lmax) int64 padded with -1, ``task_len`` (N,), ``tasks`` list[str];
      ``progress`` (N,) number of task colours visited so far; ``step_count`` (N,);
      ``dist_to_color`` (N, O, G·G) BFS distance maps (see ``distance_maps``), computed on reset.
    """

    def __init__(self, num_envs: int, config: PinPadConfig | None = None, seed: int | None = None,
                 copy_obs: bool = True) -> None:
        """Allocate state for ``num_envs`` episodes; call ``reset`` before ``step``.

        ``copy_obs=False`` makes ``reset``/``step`` return the internal (N, D) buffer itself, which
        the next ``step``/``reset`` mutates in place (faster; copy it if you keep it).
        """
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.config = config if config is not None else PinPadConfig()
        self.copy_obs = copy_obs
        self._pool_chunk = int(np.clip(4 * self.num_envs, 64, 4096))
        self.rng = np.random.default_rng(seed)
        cfg = self.config
        n = self.num_envs
        self._nbr = _neighbour_table(cfg.grid)
        self._ar = np.arange(n)
        self._obs = np.zeros((n, cfg.obs_dim), dtype=np.float32)
        self.agent_cell = np.zeros(n, dtype=np.int64)
        self.color_cell = np.zeros((n, cfg.n_colors), dtype=np.int64)
        self.wall_cell = np.zeros((n, cfg.n_walls), dtype=np.int64)
        self.cell_color = np.full((n, cfg.n_cells), -1, dtype=np.int64)
        self.cell_wall = np.zeros((n, cfg.n_cells), dtype=bool)
        self.dist_to_color = np.zeros((n, cfg.n_colors, cfg.n_cells), dtype=np.int32)
        self.task_array = np.full((n, 1), -1, dtype=np.int64)
        self.task_len = np.ones(n, dtype=np.int64)
        self.tasks: list[str] = [""] * n
        self.progress = np.zeros(n, dtype=np.int64)
        self.step_count = np.zeros(n, dtype=np.int64)
        self.terminated = np.ones(n, dtype=bool)
        self.truncated = np.zeros(n, dtype=bool)
        self.success = np.zeros(n, dtype=bool)
        self._has_reset = False

    # ------------------------------------------------------------------ derived state
    @property
    def done(self) -> np.ndarray:
        """(N,) bool: episode over (terminated or truncated)."""
        return self.terminated | self.truncated

    @property
    def agent_pos(self) -> np.ndarray:
        """(N, 2) agent (row, col)."""
        return np.stack(np.divmod(self.agent_cell, self.config.grid), axis=-1)

    @property
    def color_pos(self) -> np.ndarray:
        """(N, O, 2) (row, col) of each colour."""
        return np.stack(np.divmod(self.color_cell, self.config.grid), axis=-1)

    @property
    def wall_pos(self) -> np.ndarray:
        """(N, W, 2) (row, col) of each wall."""
        return np.stack(np.divmod(self.wall_cell, self.config.grid), axis=-1)

    @property
    def target_color(self) -> np.ndarray:
        """(N,) the next colour to visit (the last one of the task once it is completed)."""
        k = np.minimum(self.progress, self.task_len - 1)
        return self.task_array[self._ar, k]

    @property
    def subgoal(self) -> np.ndarray:
        """(N,) ground-truth subgoal id (colour pair, c // 2) being pursued; for analysis only."""
        return self.target_color // 2

    @property
    def wrong_colour(self) -> np.ndarray:
        """(N,) the colour a failed episode ended by entering (one that was not next); −1 for the others."""
        failed = self.terminated & ~self.success & self._has_reset
        return np.where(failed, self.cell_color[self._ar, self.agent_cell], -1)

    @property
    def obs(self) -> np.ndarray:
        """(N, D) the current observations (the internal buffer; do not modify)."""
        return self._obs

    # ------------------------------------------------------------------ reset
    def _check_tasks(self, tasks: str | Sequence[str] | None, n: int) -> list[str]:
        if tasks is None:
            idx = self.rng.integers(len(PRETRAINING_TASKS), size=n)
            return [PRETRAINING_TASKS[i] for i in idx]
        if isinstance(tasks, str):
            return [tasks] * n
        tasks = list(tasks)
        if len(tasks) != n:
            raise ValueError(f"got {len(tasks)} tasks for {n} environments; pass one per env, a single string, or None")
        return tasks

    def reset(self, tasks: str | Sequence[str] | None = None, seed: int | None = None,
              env_ids: Sequence[int] | np.ndarray | None = None, group_size: int = 1) -> np.ndarray:
        """Start new episodes with fresh layouts; returns the (N, D) float32 observations.

        ``tasks``: one task string per reset env, a single string for all, or None to sample each
        uniformly from ``PRETRAINING_TASKS``. ``seed`` reseeds the generator first. ``env_ids``
        resets only those envs (the others keep their state); ``tasks`` then has len(env_ids) entries.
        ``group_size`` G: consecutive reset envs in groups of G share one layout (GRPO groups); the
        number of reset envs must be a multiple of G and the envs of a group must share their task.
        """
        cfg = self.config
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        if env_ids is None:
            ids = self._ar
        else:
            ids = np.asarray(env_ids, dtype=np.int64).reshape(-1)
            if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs):
                raise ValueError(f"env_ids must lie in 0..{self.num_envs - 1}, got {ids.min()}..{ids.max()}")
            if not self._has_reset and ids.size != self.num_envs:
                raise ValueError("the first reset must reset every env (env_ids=None)")
        n = ids.size
        if group_size < 1 or n % group_size:
            raise ValueError(f"group_size must be a positive divisor of the {n} reset envs, got {group_size}")
        if tasks is None:  # sampled: one task per group
            task_strs = [t for t in self._check_tasks(None, n // group_size) for _ in range(group_size)]
        else:
            task_strs = self._check_tasks(tasks, n)
        if group_size > 1 and any(len({str(t) for t in task_strs[i:i + group_size]}) > 1 for i in range(0, n, group_size)):
            raise ValueError("the envs of a layout group must share their task")
        if n == 0:
            return self._obs.copy() if self.copy_obs else self._obs
        parsed = [_parse_task_cached(t, cfg.n_colors) if isinstance(t, str) else parse_task(t, cfg.n_colors)
                  for t in task_strs]
        lmax = max(len(p) for p in parsed) if parsed else 1
        if lmax > self.task_array.shape[1]:
            grow = np.full((self.num_envs, lmax - self.task_array.shape[1]), -1, dtype=np.int64)
            self.task_array = np.concatenate([self.task_array, grow], axis=1)
        task_arr = np.full((n, self.task_array.shape[1]), -1, dtype=np.int64)
        task_len = np.array([len(p) for p in parsed], dtype=np.int64)
        for i, p in enumerate(parsed):
            task_arr[i, : len(p)] = p

        layout = self._sample_layouts(task_arr[::group_size], task_len[::group_size])
        if group_size > 1:
            layout = {key: np.repeat(a, group_size, axis=0) for key, a in layout.items()}
        color_cell, wall_cell, start_cell = layout["color_cell"], layout["wall_cell"], layout["start_cell"]
        cell_color, cell_wall, dist = layout["cell_color"], layout["cell_wall"], layout["dist"]

        self.color_cell[ids] = color_cell
        self.wall_cell[ids] = wall_cell
        self.agent_cell[ids] = start_cell
        self.cell_color[ids] = cell_color
        self.cell_wall[ids] = cell_wall
        self.dist_to_color[ids] = dist
        self.task_array[ids] = task_arr
        self.task_len[ids] = task_len
        for i, t in zip(ids.tolist(), task_strs):
            self.tasks[i] = t
        self.progress[ids] = 0
        self.step_count[ids] = 0
        self.terminated[ids] = False
        self.truncated[ids] = False
        self.success[ids] = False

        # Rebuild the observations of the reset envs: (cell, channel) one-hot, flattened row-major.
        obs = np.zeros((n, cfg.n_cells, cfg.n_channels), dtype=np.float32)
        rows = np.arange(n)[:, None]
        obs[rows, color_cell, np.arange(cfg.n_colors)[None, :]] = 1.0
        obs[rows, wall_cell, cfg.n_colors + np.arange(cfg.n_walls)[None, :]] = 1.0
        obs[np.arange(n), start_cell, cfg.agent_channel] = 1.0
        self._obs[ids] = rearrange(obs, "n cell ch -> n (cell ch)")
        self._has_reset = True
        return self._obs.copy() if self.copy_obs else self._obs

    @property
    def rng(self) -> np.random.Generator:
        """The generator for layouts and sampled tasks; assigning one also drops the layout pool."""
        return self._rng

    @rng.setter
    def rng(self, value: np.random.Generator) -> None:
        self._rng = value
        self._pool: dict[str, np.ndarray] | None = None
        self._pool_pos = 0

    def _refill_pool(self, need: int) -> None:
        """Top the pool of random layouts (with their BFS maps) up to at least ``need`` unused ones."""
        cfg = self.config
        o, w = cfg.n_colors, cfg.n_walls
        k = max(need, self._pool_chunk)
        # A uniformly random ordering of the cells; the first O are colours, then W walls, then the start.
        perm = np.argsort(self._rng.random((k, cfg.n_cells)), axis=1)
        rows = np.arange(k)[:, None]
        cell_color = np.full((k, cfg.n_cells), -1, dtype=np.int64)
        cell_color[rows, perm[:, :o]] = np.arange(o)[None, :]
        cell_wall = np.zeros((k, cfg.n_cells), dtype=bool)
        cell_wall[rows, perm[:, o : o + w]] = True
        new = {
            "color_cell": perm[:, :o], "wall_cell": perm[:, o : o + w], "start_cell": perm[:, o + w],
            "cell_color": cell_color, "cell_wall": cell_wall,
            "dist": distance_maps(cell_color, cell_wall, cfg.grid, o),
        }  # fmt: skip
        new["seg"] = segment_lengths(new["dist"], new["start_cell"], new["color_cell"], cfg.grid)
        if self._pool is not None and self._pool_pos < len(self._pool["start_cell"]):
            new = {key: np.concatenate([self._pool[key][self._pool_pos :], a]) for key, a in new.items()}
        self._pool, self._pool_pos = new, 0

    def _sample_layouts(self, task_arr: np.ndarray, task_len: np.ndarray) -> dict[str, np.ndarray]:
        """Draw one layout per env from the pool, redrawing (rejection sampling) where the task is unsolvable.

        Layouts are i.i.d. uniform (non-overlapping colours, walls, start) and BFS'd in large batches
        ahead of time, so resetting a few envs is cheap; each drawn layout is examined for exactly
        one env and then consumed, so the result is exactly uniform over the solvable layouts.
        """
        cfg = self.config
        n = task_arr.shape[0]
        limit = cfg.max_steps if cfg.require_solvable_within_T else _UNREACHABLE - 1
        out: dict[str, np.ndarray] = {}
        todo = np.arange(n)
        for _ in range(10_000):
            m = todo.size
            if m == 0:
                break
            if self._pool is None or len(self._pool["start_cell"]) - self._pool_pos < m:
                self._refill_pool(m)
            pool, lo = self._pool, self._pool_pos
            self._pool_pos += m
            cand = {key: a[lo : lo + m] for key, a in pool.items()}
            route = route_lengths_from_segments(cand["seg"], task_arr[todo], task_len[todo])
            ok = route <= limit
            if not out:
                out = {key: np.empty((n,) + a.shape[1:], dtype=a.dtype) for key, a in cand.items()}
            for key, a in cand.items():
                out[key][todo[ok]] = a[ok]
            todo = todo[~ok]
        else:
            raise RuntimeError(
                f"could not sample a solvable layout for {todo.size} episodes (tasks e.g. "
                f"{task_arr[todo[0]].tolist()}) after 10000 tries; is the config {cfg} too tight?"
            )
        return out

    # ------------------------------------------------------------------ step
    def step(self, actions: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Apply one action per env; returns (obs, reward, terminated, truncated, info).

        ``info["subgoal"]`` (N,) is the subgoal id pursued at the returned observation (analysis only;
        after success it stays at the last subgoal), ``info["success"]`` (N,) whether the task was
        completed. Done envs ignore their action and return reward 0 with their final flags.
        """
        if not self._has_reset:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(actions)
        if a.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {a.shape}")
        if a.dtype.kind not in "iu":
            if a.dtype.kind == "f" and np.all(a == np.round(a)):
                a = a.astype(np.int64)
            else:
                raise ValueError(f"actions must be integers in 0..{NUM_ACTIONS - 1}, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= NUM_ACTIONS):
            raise ValueError(f"actions must lie in 0..{NUM_ACTIONS - 1}, got values {a.min()}..{a.max()}")

        cfg = self.config
        ar = self._ar
        active = ~(self.terminated | self.truncated)
        cur = self.agent_cell
        nxt = self._nbr[cur, a]
        new = np.where(active & ~self.cell_wall[ar, nxt], nxt, cur)
        moved = new != cur
        colour = self.cell_color[ar, new]
        visit = moved & (colour >= 0)
        target = self.target_color
        correct = visit & (colour == target)
        wrong = visit & ~correct
        self.progress += correct
        success = correct & (self.progress == self.task_len)
        terminated = wrong | success
        self.step_count += active
        truncated = active & ~terminated & (self.step_count >= cfg.max_steps)

        # Move the agent channel in place: clear the old cell, set the new one.
        if moved.any():
            m = np.flatnonzero(moved)
            ch = cfg.agent_channel
            self._obs[m, cur[m] * cfg.n_channels + ch] = 0.0
            self._obs[m, new[m] * cfg.n_channels + ch] = 1.0
        self.agent_cell = new

        self.terminated |= terminated
        self.truncated |= truncated
        self.success |= success
        reward = success.astype(np.float32)
        info = {"subgoal": self.subgoal, "success": self.success.copy()}
        obs = self._obs.copy() if self.copy_obs else self._obs
        return obs, reward, self.terminated.copy(), self.truncated.copy(), info


class PinPadEnv(gymnasium.Env):
    """Single-episode gymnasium view over ``BatchedPinPad`` (num_envs=1).

    ``task``: a fixed task string, or None to sample a pretraining task on every reset; a reset may
    also pass ``options={"task": "0-1-..."}``. ``info`` carries ``subgoal`` (int) and ``success`` (bool).
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, task: str | None = None, config: PinPadConfig | None = None,
                 render_mode: str | None = None) -> None:
        """Build the env; validates ``task`` eagerly so a typo fails at construction."""
        self.config = config if config is not None else PinPadConfig()
        if task is not None:
            parse_task(task, self.config.n_colors)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.task = task
        self.render_mode = render_mode
        self.core = BatchedPinPad(1, self.config)
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (self.config.obs_dim,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(NUM_ACTIONS)

    def _info(self) -> dict[str, Any]:
        return {"subgoal": int(self.core.subgoal[0]), "success": bool(self.core.success[0])}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode; ``seed`` seeds the gymnasium generator that the core samples from."""
        super().reset(seed=seed)
        if self.core.rng is not self.np_random:  # one generator: gymnasium's seeding semantics carry over
            self.core.rng = self.np_random
        task = (options or {}).get("task", self.task)
        obs = self.core.reset(None if task is None else [task])
        return obs[0], self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Take one action (0=up, 1=down, 2=left, 3=right)."""
        if not (isinstance(action, (int, np.integer)) or (isinstance(action, np.ndarray) and action.shape == ()
                and action.dtype.kind in "iu")) or not 0 <= int(action) < NUM_ACTIONS:
            raise ValueError(f"action must be an integer in 0..{NUM_ACTIONS - 1}, got {action!r}")
        obs, reward, term, trunc, _ = self.core.step(np.array([int(action)], dtype=np.int64))
        return obs[0], float(reward[0]), bool(term[0]), bool(trunc[0]), self._info()

    def render(self) -> str | None:
        """ANSI text rendering: digits = colours, # = walls, A = agent, . = empty."""
        if self.render_mode != "ansi":
            return None
        g = self.config.grid
        chars = np.full(self.config.n_cells, ".", dtype=object)
        cc = self.core.cell_color[0]
        for cell in np.flatnonzero(cc >= 0):
            chars[cell] = str(cc[cell]) if cc[cell] < 10 else "*"
        chars[self.core.cell_wall[0]] = "#"
        chars[self.core.agent_cell[0]] = "A"
        return "\n".join("".join(chars[r * g : (r + 1) * g]) for r in range(g)) + f"\ntask {self.core.tasks[0]}\n"
