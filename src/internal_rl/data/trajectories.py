"""The trajectory dataset format: padded episodes of observations, actions and subgoal labels.

Alignment (0-indexed): ``obs[:, t]`` is o_t and ``actions[:, t]`` the action taken at o_t, for
t < length; ``obs[:, length]`` is the observation after the last action (a prediction target only).
``subgoals[:, t]`` is the ground-truth subgoal pursued at step t, for analysis only (never a model
input). Padding: actions 0, subgoals -1; ``mask()`` says which steps are real.

Observations are kept *encoded* (``obs_encoding``): ``"packbits"`` stores binary observations as
bits along the observation dimension (uint8, 8× smaller than bool, 32× smaller than float32),
``"float16"``/``"float32"`` store them as is. They are decoded per batch by ``batch()``.

On disk a dataset is a folder: ``meta.json`` plus one ``.npy`` per array. ``load`` memory-maps the
observations (so a dataset larger than memory still works) and validates every array against
``meta.json`` and the others, naming the file and field at fault.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

FORMAT_NAME = "internal_rl.trajectories"
FORMAT_VERSION = 1
OBS_ENCODINGS = ("packbits", "float16", "float32")
# Arrays stored on disk: field -> file name.
_FILES = {
    "obs": "obs.npy",
    "actions": "actions.npy",
    "lengths": "lengths.npy",
    "subgoals": "subgoals.npy",
    "task_ids": "task_ids.npy",
}


def encode_obs(obs: np.ndarray, encoding: str) -> np.ndarray:
    """Encode float observations (..., D) for storage; ``packbits`` needs values in {0, 1}."""
    if encoding == "packbits":
        binary = obs != 0
        if not np.array_equal(binary, obs == 1):
            raise ValueError("obs_encoding 'packbits' needs binary (0/1) observations; use 'float16' or 'float32'")
        return np.packbits(binary, axis=-1)
    if encoding in ("float16", "float32"):
        return np.asarray(obs, dtype=encoding)
    raise ValueError(f"unknown obs_encoding {encoding!r}; expected one of {OBS_ENCODINGS}")


def decode_obs(stored: np.ndarray, encoding: str, obs_dim: int) -> np.ndarray:
    """Decode stored observations (..., stored_dim) back to float32 (..., obs_dim)."""
    if encoding == "packbits":
        return np.unpackbits(stored, axis=-1, count=obs_dim).astype(np.float32)
    if encoding in ("float16", "float32"):
        return np.asarray(stored, dtype=np.float32)
    raise ValueError(f"unknown obs_encoding {encoding!r}; expected one of {OBS_ENCODINGS}")


def _stored_obs_spec(encoding: str, obs_dim: int) -> tuple[int, np.dtype]:
    """Last dimension and dtype of the stored observation array for an encoding."""
    if encoding == "packbits":
        return math.ceil(obs_dim / 8), np.dtype(np.uint8)
    if encoding in ("float16", "float32"):
        return obs_dim, np.dtype(encoding)
    raise ValueError(f"unknown obs_encoding {encoding!r}; expected one of {OBS_ENCODINGS}")


@dataclass
class Trajectories:
    """A batch of padded episodes (see the module docstring for alignment and padding)."""

    obs: np.ndarray
    """(N, Tmax+1, stored_dim) observations in ``obs_encoding`` (decode with ``decode_obs``/``batch``)."""
    actions: np.ndarray
    """(N, Tmax) int64 action taken at o_t; 0 beyond the episode length."""
    lengths: np.ndarray
    """(N,) int64 number of actions in each episode (0 <= length <= Tmax)."""
    subgoals: np.ndarray
    """(N, Tmax) int64 ground-truth subgoal id at each step, -1 beyond the length (analysis only)."""
    tasks: list[str]
    """(N,) task string of each episode, e.g. '0-1-4-5-0-1'."""
    obs_dim: int
    """Length D of a decoded observation."""
    obs_encoding: str = "packbits"
    """How ``obs`` is stored: 'packbits' (binary obs, bit-packed along D), 'float16' or 'float32'."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON-serialisable description: env name, eps, seed, env config, ..."""

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)
        self._validate({k: k for k in _FILES})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_float_obs(cls, obs: np.ndarray, actions: np.ndarray, lengths: np.ndarray, subgoals: np.ndarray,
                       tasks: list[str], obs_encoding: str = "packbits",
                       meta: dict[str, Any] | None = None) -> "Trajectories":
        """Build from float observations (N, Tmax+1, D), encoding them for compact storage."""
        obs = np.asarray(obs)
        if obs.ndim != 3:
            raise ValueError(f"obs must have shape (N, Tmax+1, D), got {obs.shape}")
        return cls(encode_obs(obs, obs_encoding), np.asarray(actions, dtype=np.int64),
                   np.asarray(lengths, dtype=np.int64), np.asarray(subgoals, dtype=np.int64), list(tasks),
                   obs_dim=obs.shape[-1], obs_encoding=obs_encoding, meta=dict(meta or {}))

    # ------------------------------------------------------------------ basic properties
    def __len__(self) -> int:
        """Number of episodes."""
        return int(self.lengths.shape[0])

    @property
    def max_len(self) -> int:
        """Tmax, the padded number of action steps."""
        return int(self.actions.shape[1])

    @property
    def num_steps(self) -> int:
        """Total number of real (unpadded) action steps."""
        return int(self.lengths.sum())

    def mask(self) -> np.ndarray:
        """(N, Tmax) bool: True on real steps (t < length), False on padding."""
        return np.arange(self.max_len)[None, :] < self.lengths[:, None]

    def decode_obs(self, idx: np.ndarray | slice | None = None, t_end: int | None = None) -> np.ndarray:
        """Float32 observations (B, t_end, D) of episodes ``idx`` (all if None), time cropped to ``t_end``."""
        time = slice(None) if t_end is None else slice(0, t_end)
        stored = self.obs[:, time] if idx is None else self.obs[idx, time]  # crop before reading (mmap)
        return decode_obs(np.asarray(stored), self.obs_encoding, self.obs_dim)

    # ------------------------------------------------------------------ batching
    def batch(self, idx: np.ndarray | list[int] | slice) -> dict[str, torch.Tensor]:
        """Decode episodes ``idx`` into torch tensors, time-cropped to the longest episode in the batch.

        Returns obs (B, L+1, D) float32, actions (B, L) long, mask (B, L) bool, subgoals (B, L) long,
        lengths (B,) long, where L is the batch's longest length.
        """
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self.lengths[idx]
        l_max = int(lengths.max()) if lengths.size else 0
        obs = self.decode_obs(idx, t_end=l_max + 1)
        mask = np.arange(l_max)[None, :] < lengths[:, None]
        return {
            "obs": torch.from_numpy(obs),
            "actions": torch.from_numpy(np.ascontiguousarray(self.actions[idx, :l_max])),
            "mask": torch.from_numpy(mask),
            "subgoals": torch.from_numpy(np.ascontiguousarray(self.subgoals[idx, :l_max])),
            "lengths": torch.from_numpy(lengths.copy()),
        }

    def iter_batches(self, batch_size: int, shuffle: bool = True, seed: int | None = None,
                     drop_last: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """One pass over the episodes in batches (shuffled with ``seed`` if ``shuffle``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        stop = len(self) - (len(self) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])

    # ------------------------------------------------------------------ subsets
    def subset(self, idx: np.ndarray | list[int]) -> "Trajectories":
        """A new in-memory dataset with episodes ``idx``, time-cropped to its longest episode."""
        idx = np.asarray(idx, dtype=np.int64)
        l_max = int(self.lengths[idx].max()) if idx.size else 0
        return Trajectories(
            obs=np.ascontiguousarray(self.obs[idx, : l_max + 1]),
            actions=np.ascontiguousarray(self.actions[idx, :l_max]),
            lengths=self.lengths[idx].copy(),
            subgoals=np.ascontiguousarray(self.subgoals[idx, :l_max]),
            tasks=[self.tasks[i] for i in idx.tolist()],
            obs_dim=self.obs_dim,
            obs_encoding=self.obs_encoding,
            meta=json.loads(json.dumps(self.meta)),
        )

    def split(self, frac_or_n: float | int, seed: int = 0) -> tuple["Trajectories", "Trajectories"]:
        """Random (train, heldout) split; ``frac_or_n`` is the heldout fraction (float) or count (int)."""
        n = len(self)
        if isinstance(frac_or_n, (bool, np.bool_)):
            raise ValueError(f"frac_or_n must be a fraction in [0, 1) or an episode count, got {frac_or_n!r}")
        if isinstance(frac_or_n, (int, np.integer)):
            n_held = int(frac_or_n)
        elif isinstance(frac_or_n, (float, np.floating)):
            if not 0.0 <= frac_or_n < 1.0:
                raise ValueError(f"heldout fraction must lie in [0, 1), got {frac_or_n}")
            n_held = int(round(frac_or_n * n))
        else:
            raise ValueError(f"frac_or_n must be a float fraction or an int count, got {type(frac_or_n).__name__}")
        if not 0 <= n_held <= n:
            raise ValueError(f"heldout count must lie in 0..{n}, got {n_held}")
        perm = np.random.default_rng(seed).permutation(n)
        return self.subset(np.sort(perm[n_held:])), self.subset(np.sort(perm[:n_held]))

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """Write the dataset as a folder (meta.json + .npy files); returns the folder path."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        task_names = sorted(set(self.tasks))
        lookup = {t: i for i, t in enumerate(task_names)}
        arrays = {
            "obs": self.obs,
            "actions": self.actions,
            "lengths": self.lengths,
            "subgoals": self.subgoals,
            "task_ids": np.array([lookup[t] for t in self.tasks], dtype=np.int64),
        }
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "num_episodes": len(self),
            "max_len": self.max_len,
            "num_steps": self.num_steps,
            "obs_dim": self.obs_dim,
            "obs_encoding": self.obs_encoding,
            "task_names": task_names,
            "arrays": {
                k: {"file": _FILES[k], "shape": list(a.shape), "dtype": str(a.dtype)} for k, a in arrays.items()
            },
            "meta": self.meta,
        }
        text = json.dumps(meta, indent=2)  # fails before writing anything if meta is not JSON-serialisable
        for k, a in arrays.items():
            np.save(path / _FILES[k], np.ascontiguousarray(a), allow_pickle=False)
        (path / "meta.json").write_text(text)
        return path

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> "Trajectories":
        """Load a dataset folder, validating every array; ``mmap`` memory-maps the observations."""
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise ValueError(f"{meta_file}: missing; not a trajectories folder")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_file}: not valid JSON ({e})") from e
        for key in ("format", "version", "num_episodes", "max_len", "obs_dim", "obs_encoding", "task_names",
                    "arrays", "meta"):
            if key not in meta:
                raise ValueError(f"{meta_file}: field {key!r} is missing")
        if meta["format"] != FORMAT_NAME or meta["version"] != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: field 'format'/'version' is {meta['format']!r} v{meta['version']}, "
                             f"expected {FORMAT_NAME!r} v{FORMAT_VERSION}")
        if meta["obs_encoding"] not in OBS_ENCODINGS:
            raise ValueError(f"{meta_file}: field 'obs_encoding' is {meta['obs_encoding']!r}, "
                             f"expected one of {OBS_ENCODINGS}")
        n, t_max, d = int(meta["num_episodes"]), int(meta["max_len"]), int(meta["obs_dim"])
        stored_dim, obs_dtype = _stored_obs_spec(meta["obs_encoding"], d)
        expected = {
            "obs": ((n, t_max + 1, stored_dim), obs_dtype),
            "actions": ((n, t_max), np.dtype(np.int64)),
            "lengths": ((n,), np.dtype(np.int64)),
            "subgoals": ((n, t_max), np.dtype(np.int64)),
            "task_ids": ((n,), np.dtype(np.int64)),
        }
        arrays: dict[str, np.ndarray] = {}
        for key, (shape, dtype) in expected.items():
            file = path / _FILES[key]
            where = f"{file} (field {key!r})"
            entry = meta["arrays"].get(key)
            if entry is None:
                raise ValueError(f"{meta_file}: field 'arrays.{key}' is missing")
            if tuple(entry["shape"]) != shape or np.dtype(entry["dtype"]) != dtype:
                raise ValueError(f"{meta_file}: field 'arrays.{key}' says shape {tuple(entry['shape'])} dtype "
                                 f"{entry['dtype']}, inconsistent with expected {shape} {dtype}")
            if not file.is_file():
                raise ValueError(f"{where}: file is missing")
            try:
                a = np.load(file, mmap_mode="r" if (mmap and key == "obs") else None, allow_pickle=False)
            except Exception as e:  # truncated or garbled .npy
                raise ValueError(f"{where}: cannot be read as a .npy array ({e})") from e
            if a.shape != shape:
                raise ValueError(f"{where}: shape {a.shape}, expected {shape} from meta.json")
            if a.dtype != dtype:
                raise ValueError(f"{where}: dtype {a.dtype}, expected {dtype} from meta.json")
            arrays[key] = a
        task_names = list(meta["task_names"])
        ids = arrays["task_ids"]
        if ids.size and (ids.min() < 0 or ids.max() >= len(task_names)):
            raise ValueError(f"{path / _FILES['task_ids']} (field 'task_ids'): values must lie in "
                             f"0..{len(task_names) - 1} (meta.json task_names)")
        traj = cls.__new__(cls)
        traj.obs, traj.actions, traj.lengths, traj.subgoals = (
            arrays["obs"], arrays["actions"], arrays["lengths"], arrays["subgoals"])
        traj.tasks = [task_names[i] for i in ids.tolist()]
        traj.obs_dim, traj.obs_encoding, traj.meta = d, meta["obs_encoding"], meta["meta"]
        traj._validate({k: f"{path / f} (field {k!r})" for k, f in _FILES.items()})
        return traj

    # ------------------------------------------------------------------ validation
    def _validate(self, where: dict[str, str]) -> None:
        """Check shapes, dtypes, lengths and padding; ``where`` names each field's origin in errors."""
        if self.obs_encoding not in OBS_ENCODINGS:
            raise ValueError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {self.obs_encoding!r}")
        lengths, actions, subgoals = self.lengths, self.actions, self.subgoals
        if lengths.ndim != 1 or lengths.dtype != np.int64:
            raise ValueError(f"{where['lengths']}: expected a 1-d int64 array, got {lengths.shape} {lengths.dtype}")
        n = lengths.shape[0]
        if actions.ndim != 2 or actions.shape[0] != n or actions.dtype != np.int64:
            raise ValueError(f"{where['actions']}: expected (N={n}, Tmax) int64, got {actions.shape} {actions.dtype}")
        t_max = actions.shape[1]
        if subgoals.shape != (n, t_max) or subgoals.dtype != np.int64:
            raise ValueError(f"{where['subgoals']}: expected {(n, t_max)} int64, got {subgoals.shape} {subgoals.dtype}")
        stored_dim, obs_dtype = _stored_obs_spec(self.obs_encoding, self.obs_dim)
        if self.obs.shape != (n, t_max + 1, stored_dim) or self.obs.dtype != obs_dtype:
            raise ValueError(f"{where['obs']}: expected {(n, t_max + 1, stored_dim)} {obs_dtype} "
                             f"(encoding {self.obs_encoding}, obs_dim {self.obs_dim}), got {self.obs.shape} {self.obs.dtype}")
        if len(self.tasks) != n:
            raise ValueError(f"{where['task_ids']}: {len(self.tasks)} tasks for {n} episodes")
        if n and (lengths.min() < 0 or lengths.max() > t_max):
            raise ValueError(f"{where['lengths']}: lengths must lie in 0..{t_max}, got {lengths.min()}..{lengths.max()}")
        mask = self.mask()
        if np.any(actions[mask] < 0):
            raise ValueError(f"{where['actions']}: negative action inside an episode")
        if np.any(actions[~mask] != 0):
            raise ValueError(f"{where['actions']}: padding beyond an episode's length must be 0")
        if np.any(subgoals[~mask] != -1):
            raise ValueError(f"{where['subgoals']}: padding beyond an episode's length must be -1")
