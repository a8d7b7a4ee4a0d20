"""BabyAI (minigrid) levels behind the batched interface of ``BatchedPinPad``, with a symbolic observation.

Needs the optional ``babyai`` extra (``pip install 'internal-rl[babyai]'``, i.e. minigrid); minigrid is
imported only when an environment is built, so importing this module (or ``internal_rl``) never needs it.

``BatchedBabyAI`` steps ``num_envs`` minigrid episodes with a python loop and exposes what the RL code
expects of a batched env: ``num_envs``, ``config.max_steps``, ``reset(tasks, seed) -> obs (N, obs_dim)``,
``step(actions) -> (obs, reward, terminated, truncated, info)``, ``done``/``success``/``terminated``/
``truncated`` (N,) bool and ``step_count`` (N,). There is no auto-reset: a finished episode ignores its
actions, returns reward 0, keeps its last observation and flags until the next ``reset``.

Tasks are episode seeds. ``reset(tasks=[s_1, .., s_N])`` resets env i with minigrid seed s_i, which fixes
its layout and mission, so two envs given the same seed play the same episode (GRPO groups rely on
this). ``reset(tasks=None, seed=k)`` draws the episode seeds from ``numpy.random.default_rng(k)`` (or
from the env's own generator when ``seed`` is None).

Reward: 1 when the mission is completed (minigrid's time-discounted reward is dropped: success is
what we report), else 0. Episodes are truncated after ``max_steps`` actions (passed to minigrid as its
fixed step limit; the BabyAI default limit is far longer than any expert episode of the small levels).

Actions: minigrid's first six, ids unchanged: 0 left, 1 right, 2 forward, 3 pickup, 4 drop, 5 toggle.
``done`` (6) is left out: it does nothing in BabyAI unless BABYAI_DONE_ACTIONS is set, and the bot
never needs it before the episode has ended.

Observation (float32, binary, ``obs_dim = 49·20 + 4 + n_slots·15``, 1044 with the default 4 slots),
the concatenation of:

1. the egocentric 7×7 view, as minigrid's ``obs["image"]`` (shape (7, 7, 3), indexed [i, j] with the
   agent at (3, 6) looking towards j = 0), flattened in that order, each cell one-hot encoded as
   object type (11: unseen, empty, wall, floor, door, key, ball, box, goal, lava, agent), colour
   (6: red, green, blue, purple, yellow, grey) and state (3: open, closed, locked) = 20 bits per cell;
2. the agent direction one-hot (4: right, down, left, up, minigrid's ``obs["direction"]``);
3. the mission, parsed from minigrid's instruction tree (not from the string), as ``n_slots`` slots,
   one per action clause *in the order the clauses must be carried out* ("A, then B" and "A and B":
   A first; "A after you B": B first; the order the BabyAI bot executes them). Each slot is
   action (4: go to, open, pick up, put next) + colour (7: the 6 colours or "any colour") + object
   type (4: door, key, ball, box) = 15 bits; unused slots are all zero. Object locations ("on your
   left", used by some levels but not GoToSeq) and the fixed object of "put X next to Y" are not
   encoded. Clauses beyond ``n_slots`` raise an error. ``n_slots=0`` hides the mission altogether (the
   agent must then infer it, as the pinpad agent infers its task; see ``phases/babyai.py``).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: Default level: GoToSeq in 2×2 rooms of size 5 with 4 distractors (1–4 "go to" clauses per mission).
DEFAULT_LEVEL = "BabyAI-GoToSeqS5R2-v0"
ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle")
NUM_ACTIONS = len(ACTION_NAMES)
VIEW = 7
N_OBJECT_TYPES, N_COLORS, N_STATES = 11, 6, 3
CELL_BITS = N_OBJECT_TYPES + N_COLORS + N_STATES
IMAGE_BITS = VIEW * VIEW * CELL_BITS
N_DIRECTIONS = 4
SLOT_ACTIONS = ("goto", "open", "pickup", "putnext")
SLOT_COLORS = ("red", "green", "blue", "purple", "yellow", "grey", None)  # None: "any colour"
SLOT_TYPES = ("door", "key", "ball", "box")
SLOT_BITS = len(SLOT_ACTIONS) + len(SLOT_COLORS) + len(SLOT_TYPES)


def require_minigrid():
    """Import minigrid (registers the BabyAI levels with gymnasium); a clear error if the extra is missing."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # minigrid imports pygame for rendering
    try:
        import minigrid  # noqa: F401
    except ImportError as e:
        raise ImportError("BabyAI needs the optional 'babyai' extra: pip install 'internal-rl[babyai]' "
                          "(or pip install minigrid)") from e
    return minigrid


@dataclass(frozen=True)
class BabyAIEnvConfig:
    """A BabyAI level and the sizes of its encoding."""

    level: str = DEFAULT_LEVEL
    """Registered minigrid id of the level, e.g. 'BabyAI-GoToSeqS5R2-v0' or 'BabyAI-GoToSeq-v0'."""
    max_steps: int = 64
    """Episode length limit T (truncation after T actions)."""
    n_slots: int = 4
    """Mission clauses encoded (GoToSeq missions have 1 to 4); 0 leaves the mission out of the observation."""

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.n_slots < 0:
            raise ValueError(f"BabyAIEnvConfig needs max_steps >= 1 and n_slots >= 0, got {self.max_steps}, "
                             f"{self.n_slots}")

    @property
    def obs_dim(self) -> int:
        return IMAGE_BITS + N_DIRECTIONS + self.n_slots * SLOT_BITS

    @property
    def n_actions(self) -> int:
        return NUM_ACTIONS


def mission_clauses(instr: Any) -> list[tuple[str, Any]]:
    """The action clauses of a BabyAI instruction tree in execution order: [(kind, ObjDesc), ...].

    kind is 'goto', 'open', 'pickup' or 'putnext' (with the moved object's description). The order
    is the BabyAI bot's: And/Before run a then b, After runs b then a.
    """
    from minigrid.envs.babyai.core import verifier as v

    if isinstance(instr, (v.BeforeInstr, v.AndInstr)):
        return mission_clauses(instr.instr_a) + mission_clauses(instr.instr_b)
    if isinstance(instr, v.AfterInstr):
        return mission_clauses(instr.instr_b) + mission_clauses(instr.instr_a)
    if isinstance(instr, v.GoToInstr):
        return [("goto", instr.desc)]
    if isinstance(instr, v.OpenInstr):
        return [("open", instr.desc)]
    if isinstance(instr, v.PickupInstr):
        return [("pickup", instr.desc)]
    if isinstance(instr, v.PutNextInstr):
        return [("putnext", instr.desc_move)]
    raise ValueError(f"unsupported BabyAI instruction {type(instr).__name__}")


def encode_mission(instr: Any, n_slots: int) -> np.ndarray:
    """The mission slots (n_slots·15,) float32 of an instruction tree (see the module docstring)."""
    if n_slots == 0:  # mission hidden
        return np.zeros(0, dtype=np.float32)
    clauses = mission_clauses(instr)
    if len(clauses) > n_slots:
        raise ValueError(f"mission has {len(clauses)} clauses but only n_slots={n_slots} are encoded")
    out = np.zeros((n_slots, SLOT_BITS), dtype=np.float32)
    for k, (kind, desc) in enumerate(clauses):
        out[k, SLOT_ACTIONS.index(kind)] = 1
        out[k, len(SLOT_ACTIONS) + SLOT_COLORS.index(desc.color)] = 1
        out[k, len(SLOT_ACTIONS) + len(SLOT_COLORS) + SLOT_TYPES.index(desc.type)] = 1
    return out.reshape(-1)


def encode_views(images: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """One-hot encode minigrid views (N, 7, 7, 3) int and directions (N,) → (N, 49·20 + 4) float32."""
    n = images.shape[0]
    out = np.zeros((n, VIEW * VIEW, CELL_BITS), dtype=np.float32)
    cells = images.reshape(n, VIEW * VIEW, 3).astype(np.int64)
    rows, cols = np.arange(n)[:, None], np.arange(VIEW * VIEW)[None, :]
    out[rows, cols, cells[..., 0]] = 1
    out[rows, cols, N_OBJECT_TYPES + cells[..., 1]] = 1
    out[rows, cols, N_OBJECT_TYPES + N_COLORS + cells[..., 2]] = 1
    direction = np.zeros((n, N_DIRECTIONS), dtype=np.float32)
    direction[np.arange(n), directions.astype(np.int64)] = 1
    return np.concatenate([out.reshape(n, IMAGE_BITS), direction], axis=1)


def make_level(level: str, max_steps: int):
    """One minigrid BabyAI env (gymnasium wrapper kept; the env checker is off)."""
    require_minigrid()
    import gymnasium

    return gymnasium.make(level, max_steps=max_steps, disable_env_checker=True)


class BatchedBabyAI:
    """``num_envs`` BabyAI episodes behind the ``BatchedPinPad`` interface (a python loop over minigrid envs).

    Attributes: ``envs`` (the minigrid envs, for experts such as the BabyAI bot), ``missions`` (N,)
    mission strings and ``episode_seeds`` (N,) of the current episodes, ``done``/``success``/
    ``terminated``/``truncated`` (N,) bool, ``step_count`` (N,) int64.
    """

    def __init__(self, num_envs: int, level: str = DEFAULT_LEVEL, seed: int | None = None, max_steps: int = 64,
                 n_slots: int = 4, config: BabyAIEnvConfig | None = None) -> None:
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = n = int(num_envs)
        self.config = config if config is not None else BabyAIEnvConfig(level, max_steps, n_slots)
        self.rng = np.random.default_rng(seed)
        self.envs = [make_level(self.config.level, self.config.max_steps) for _ in range(n)]
        self._obs = np.zeros((n, self.config.obs_dim), dtype=np.float32)
        self._view_dim = IMAGE_BITS + N_DIRECTIONS
        self.terminated = np.zeros(n, dtype=bool)
        self.truncated = np.zeros(n, dtype=bool)
        self.success = np.zeros(n, dtype=bool)
        self.step_count = np.zeros(n, dtype=np.int64)
        self.episode_seeds = np.zeros(n, dtype=np.int64)
        self.missions: list[str] = [""] * n

    @property
    def obs_dim(self) -> int:
        return self.config.obs_dim

    @property
    def done(self) -> np.ndarray:
        """(N,) episodes that have ended (terminated or truncated)."""
        return self.terminated | self.truncated

    def _write_views(self, idx: list[int], raw: list[dict]) -> None:
        images = np.stack([o["image"] for o in raw])
        directions = np.array([o["direction"] for o in raw])
        self._obs[idx, : self._view_dim] = encode_views(images, directions)

    def reset(self, tasks: Sequence[int] | np.ndarray | None = None, seed: int | None = None,
              group_size: int = 1) -> np.ndarray:
        """Start new episodes in every env; ``tasks`` are per-env episode seeds (None: drawn, see module doc).
        ``group_size`` G: consecutive envs in groups of G play the same seed (GRPO groups); drawn seeds are
        drawn once per group, given ones must agree within each group."""
        if group_size < 1 or self.num_envs % group_size:
            raise ValueError(f"group_size must be a positive divisor of the {self.num_envs} envs, got {group_size}")
        if tasks is None:
            rng = self.rng if seed is None else np.random.default_rng(seed)
            seeds = np.repeat(rng.integers(0, 2**31 - 1, size=self.num_envs // group_size), group_size)
        else:
            if isinstance(tasks, str):
                raise ValueError("BatchedBabyAI tasks are episode seeds (a sequence of ints) or None, got a string "
                                 f"{tasks!r}")
            seeds = np.asarray(tasks)
            if seeds.shape != (self.num_envs,) or not np.issubdtype(seeds.dtype, np.integer):
                raise ValueError(f"tasks must be {self.num_envs} integer episode seeds, got {seeds.dtype} "
                                 f"array of shape {seeds.shape}")
            if seeds.min() < 0:
                raise ValueError(f"episode seeds must be >= 0, got {int(seeds.min())}")
            if group_size > 1 and (seeds.reshape(-1, group_size) != seeds[::group_size, None]).any():
                raise ValueError("the envs of a group must share their episode seed")
        raw = []
        slots = self.config.n_slots
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints every rejected layout sample
            for i, env in enumerate(self.envs):
                o, _ = env.reset(seed=int(seeds[i]))
                raw.append(o)
                self.missions[i] = o["mission"]
                self._obs[i, self._view_dim:] = encode_mission(env.unwrapped.instrs, slots)
        self._write_views(list(range(self.num_envs)), raw)
        self.episode_seeds[:] = seeds
        self.terminated[:] = False
        self.truncated[:] = False
        self.success[:] = False
        self.step_count[:] = 0
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Advance every live episode by its action (N,) int in 0..5; finished episodes ignore theirs."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        reward = np.zeros(self.num_envs, dtype=np.float32)
        live = np.flatnonzero(~self.done)
        if live.size:
            a = actions[live]
            if a.min() < 0 or a.max() >= NUM_ACTIONS:
                raise ValueError(f"actions must lie in 0..{NUM_ACTIONS - 1} ({', '.join(ACTION_NAMES)}), got "
                                 f"{a.min()}..{a.max()}")
        raw = []
        for i in live.tolist():
            o, r, term, trunc, _ = self.envs[i].step(int(actions[i]))
            raw.append(o)
            self.step_count[i] += 1
            won = bool(term) and r > 0
            self.success[i] = won
            reward[i] = float(won)
            self.terminated[i] = bool(term)
            self.truncated[i] = not term and (bool(trunc) or self.step_count[i] >= self.config.max_steps)
        if raw:
            self._write_views(live.tolist(), raw)
        return self._obs.copy(), reward, self.terminated.copy(), self.truncated.copy(), {}
