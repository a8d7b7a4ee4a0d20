"""The trajectory dataset format: ragged episodes of observations, actions and subgoal labels.

Storage is *flat* (ragged): the episodes are concatenated along one step axis, so a dataset costs
memory and disk in proportion to its real steps, not to ``N × Tmax``.

* ``lengths`` (N,): number of actions of each episode.
* ``actions_flat`` / ``subgoals_flat`` (sum(lengths),): the steps of episode 0, then of episode 1, ...
  Episode i's steps are ``[step_offsets[i], step_offsets[i + 1])``.
* ``obs_flat`` (sum(lengths + 1), stored_dim): each episode contributes ``length + 1`` observations,
  o_0 .. o_length (the last one is the observation after the final action, a prediction target
  only). Episode i's observations are ``[obs_offsets[i], obs_offsets[i + 1])``.

Alignment within an episode (0-indexed): o_t is the observation at which action a_t was taken, for
t < length. ``subgoals`` are the ground-truth subgoal pursued at each step, for analysis only (never a
model input).

Padded views (what callers see): ``batch()`` and ``decode_obs()`` build padded arrays for just the
requested episodes with one vectorised gather; padding is actions 0, subgoals -1, observations 0,
and ``mask()``/``batch()["mask"]`` say which steps are real. The ``.obs``, ``.actions`` and
``.subgoals`` properties return the whole dataset padded to ``max_len`` (the longest episode); they
*materialise* a new (N, max_len[+1], ...) array on every access, so keep them out of hot paths and
away from large datasets (use ``batch()`` or the flat arrays instead).

Observations are kept *encoded* (``obs_encoding``): ``"packbits"`` stores binary observations as
bits along the observation dimension (uint8, 8× smaller than bool, 32× smaller than float32),
``"float16"``/``"float32"`` store them as is. They are decoded per batch by ``batch()``.

On disk a dataset is a folder: ``meta.json`` (``format_version`` 2) plus one ``.npy`` per flat array.
``load`` memory-maps the observations (so a dataset larger than memory still works; ``batch()``
reads only the rows it needs) and validates every array against ``meta.json`` and the others,
naming the file and field at fault. Folders of the old padded format (version 1) are refused with a
message to regenerate them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

FORMAT_NAME = "internal_rl.trajectories"
FORMAT_VERSION = 2
"""2: flat/ragged arrays (this module). 1: padded (N, Tmax) arrays, no longer readable."""
OBS_ENCODINGS = ("packbits", "float16", "float32")
# Arrays stored on disk: field -> file name.
_FILES = {
    "obs_flat": "obs_flat.npy",
    "actions_flat": "actions_flat.npy",
    "lengths": "lengths.npy",
    "subgoals_flat": "subgoals_flat.npy",
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


def _ragged_rows(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Flat row indices ``[starts[0], starts[0] + counts[0]), [starts[1], ...), ...`` concatenated."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = starts - (np.cumsum(counts) - counts)  # row = shift[episode] + position in the output
    return np.repeat(shift, counts) + np.arange(total, dtype=np.int64)


def _pad_mask(counts: np.ndarray, width: int) -> np.ndarray:
    """(B, width) bool, True on the first ``counts[b]`` entries of row b."""
    return np.arange(width)[None, :] < counts[:, None]


def _flatten_steps(actions: np.ndarray, lengths: np.ndarray,
                   subgoals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check padded (N, Tmax) actions/subgoals against ``lengths``; return int64 lengths and flat steps."""
    actions, subgoals = np.asarray(actions), np.asarray(subgoals)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1:
        raise ValueError(f"lengths: expected a 1-d array, got shape {lengths.shape}")
    n = lengths.shape[0]
    if actions.ndim != 2 or actions.shape[0] != n:
        raise ValueError(f"actions: expected (N={n}, Tmax), got {actions.shape}")
    t_max = actions.shape[1]
    if subgoals.shape != (n, t_max):
        raise ValueError(f"subgoals: expected {(n, t_max)}, got {subgoals.shape}")
    if n and (lengths.min() < 0 or lengths.max() > t_max):
        raise ValueError(f"lengths: lengths must lie in 0..{t_max}, got {lengths.min()}..{lengths.max()}")
    mask = _pad_mask(lengths, t_max)
    if np.any(actions[~mask] != 0):
        raise ValueError("actions: padding beyond an episode's length must be 0")
    if np.any(subgoals[~mask] != -1):
        raise ValueError("subgoals: padding beyond an episode's length must be -1")
    return lengths, actions[mask].astype(np.int64), subgoals[mask].astype(np.int64)


class Trajectories:
    """A set of ragged episodes stored flat (see the module docstring for layout and alignment)."""

    obs_flat: np.ndarray
    """(sum(lengths + 1), stored_dim) observations in ``obs_encoding``; episode i at obs_offsets[i]:."""
    actions_flat: np.ndarray
    """(sum(lengths),) int64 action taken at o_t; episode i at step_offsets[i]:."""
    lengths: np.ndarray
    """(N,) int64 number of actions in each episode (>= 0)."""
    subgoals_flat: np.ndarray
    """(sum(lengths),) int64 ground-truth subgoal id at each step (analysis only)."""
    tasks: list[str]
    """(N,) task string of each episode, e.g. '0-1-4-5-0-1'."""
    obs_dim: int
    """Length D of a decoded observation."""
    obs_encoding: str
    """How observations are stored: 'packbits' (binary obs, bit-packed along D), 'float16' or 'float32'."""
    meta: dict[str, Any]
    """Free-form JSON-serialisable description: env name, eps, seed, env config, ..."""
    step_offsets: np.ndarray
    """(N+1,) int64 start of each episode in ``actions_flat``/``subgoals_flat`` (last: total steps)."""
    obs_offsets: np.ndarray
    """(N+1,) int64 start of each episode in ``obs_flat`` (= step_offsets + arange(N+1))."""

    def __init__(self, obs_flat: np.ndarray, actions_flat: np.ndarray, lengths: np.ndarray,
                 subgoals_flat: np.ndarray, tasks: list[str], obs_dim: int, obs_encoding: str = "packbits",
                 meta: dict[str, Any] | None = None) -> None:
        """From flat arrays (see the class attributes); padded arrays go through ``from_padded``."""
        self.obs_flat, self.actions_flat, self.lengths, self.subgoals_flat = (
            obs_flat, actions_flat, lengths, subgoals_flat)
        self.tasks, self.obs_dim, self.obs_encoding = list(tasks), int(obs_dim), obs_encoding
        self.meta = dict(meta or {})
        self._validate({k: k for k in _FILES})

    def __repr__(self) -> str:
        return (f"Trajectories(episodes={len(self)}, steps={self.num_steps}, max_len={self.max_len}, "
                f"obs_dim={self.obs_dim}, obs_encoding={self.obs_encoding!r})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_padded(cls, obs: np.ndarray, actions: np.ndarray, lengths: np.ndarray, subgoals: np.ndarray,
                    tasks: list[str], obs_dim: int, obs_encoding: str = "packbits",
                    meta: dict[str, Any] | None = None) -> "Trajectories":
        """From padded arrays: *encoded* obs (N, Tmax+1, stored_dim), actions and subgoals (N, Tmax).

        Padding must be actions 0 and subgoals -1 (checked); observations beyond o_length are dropped.
        """
        obs = np.asarray(obs)
        lengths, actions_flat, subgoals_flat = _flatten_steps(actions, lengths, subgoals)
        n, t_max = lengths.shape[0], np.shape(actions)[1]
        if obs.ndim != 3 or obs.shape[:2] != (n, t_max + 1):
            raise ValueError(f"obs: expected (N={n}, Tmax+1={t_max + 1}, stored_dim), got {obs.shape}")
        return cls(obs[_pad_mask(lengths + 1, t_max + 1)], actions_flat, lengths, subgoals_flat, tasks,
                   obs_dim=obs_dim, obs_encoding=obs_encoding, meta=meta)

    @classmethod
    def from_float_obs(cls, obs: np.ndarray, actions: np.ndarray, lengths: np.ndarray, subgoals: np.ndarray,
                       tasks: list[str], obs_encoding: str = "packbits",
                       meta: dict[str, Any] | None = None) -> "Trajectories":
        """Build from padded float observations (N, Tmax+1, D), encoding them for compact storage.

        Only o_0..o_length of each episode is kept (and, for ``packbits``, has to be binary); padding
        must be actions 0 and subgoals -1 (checked).
        """
        obs = np.asarray(obs)
        if obs.ndim != 3:
            raise ValueError(f"obs must have shape (N, Tmax+1, D), got {obs.shape}")
        lengths, actions_flat, subgoals_flat = _flatten_steps(actions, lengths, subgoals)
        n, t_max = lengths.shape[0], np.shape(actions)[1]
        if obs.shape[:2] != (n, t_max + 1):
            raise ValueError(f"obs: expected (N={n}, Tmax+1={t_max + 1}, D), got {obs.shape}")
        flat = encode_obs(obs[_pad_mask(lengths + 1, t_max + 1)], obs_encoding)
        return cls(flat, actions_flat, lengths, subgoals_flat, tasks, obs_dim=obs.shape[-1],
                   obs_encoding=obs_encoding, meta=meta)

    # ------------------------------------------------------------------ basic properties
    def __len__(self) -> int:
        """Number of episodes."""
        return int(self.lengths.shape[0])

    @property
    def max_len(self) -> int:
        """The longest episode length: the padded width of ``mask()``, ``.actions``, ``.subgoals``."""
        return int(self.lengths.max()) if len(self) else 0

    @property
    def num_steps(self) -> int:
        """Total number of real (unpadded) action steps."""
        return int(self.actions_flat.shape[0])

    def mask(self) -> np.ndarray:
        """(N, max_len) bool: True on real steps (t < length), False on padding."""
        return _pad_mask(self.lengths, self.max_len)

    @property
    def actions(self) -> np.ndarray:
        """(N, max_len) int64 padded actions (0 beyond each length). Materialises a new array on every access."""
        return self._padded_steps(self.actions_flat, np.arange(len(self)), self.max_len, 0)

    @property
    def subgoals(self) -> np.ndarray:
        """(N, max_len) int64 padded subgoals (-1 beyond each length). Materialises a new array on every access."""
        return self._padded_steps(self.subgoals_flat, np.arange(len(self)), self.max_len, -1)

    @property
    def obs(self) -> np.ndarray:
        """(N, max_len+1, stored_dim) padded *encoded* observations (0 beyond o_length).

        Materialises a new array on every access (reading all of a memory-mapped ``obs_flat``).
        """
        idx = np.arange(len(self))
        return self._padded_stored_obs(idx, self.lengths + 1, self.max_len + 1)

    # ------------------------------------------------------------------ padded gathers
    def _episodes(self, idx: np.ndarray | list[int] | slice | None) -> np.ndarray:
        """Episode indices as a 1-d int64 array (None: all, bool: a mask); negative ones count from the end."""
        if idx is None:
            return np.arange(len(self))
        if isinstance(idx, slice):
            return np.arange(len(self))[idx]
        n = len(self)
        idx = np.asarray(idx)
        if idx.dtype == bool:  # a mask over the episodes
            if idx.shape != (n,):
                raise IndexError(f"boolean episode mask has shape {idx.shape}, expected ({n},)")
            return np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        if idx.ndim != 1:
            raise ValueError(f"episode indices must be 1-d, got shape {idx.shape}")
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"episode index out of range for {n} episodes: {idx.min()}..{idx.max()}")
        return np.where(idx < 0, idx + n, idx)

    def _padded_steps(self, flat: np.ndarray, idx: np.ndarray, width: int, fill: int) -> np.ndarray:
        """(B, width) padded per-step values of episodes ``idx`` (``fill`` beyond each length)."""
        counts = np.minimum(self.lengths[idx], width)
        out = np.full((idx.shape[0], width), fill, dtype=flat.dtype)
        out[_pad_mask(counts, width)] = flat[_ragged_rows(self.step_offsets[idx], counts)]
        return out

    def _padded_stored_obs(self, idx: np.ndarray, counts: np.ndarray, width: int) -> np.ndarray:
        """(B, width, stored_dim) encoded observations of episodes ``idx``, zero beyond ``counts``."""
        rows = _ragged_rows(self.obs_offsets[idx], counts)
        out = np.zeros((idx.shape[0], width, self.obs_flat.shape[1]), dtype=self.obs_flat.dtype)
        out[_pad_mask(counts, width)] = np.take(self.obs_flat, rows, axis=0)  # reads only these rows (mmap)
        return out

    def _padded_float_obs(self, idx: np.ndarray, width: int) -> np.ndarray:
        """(B, width, D) float32 observations of episodes ``idx``, zero beyond o_length.

        Gathers the real encoded frames into a zero-padded array, then decodes it (encoded zeros decode
        to 0.0 in every encoding; decoding the padded array is faster than scattering decoded rows).
        """
        counts = np.minimum(self.lengths[idx] + 1, width)
        return decode_obs(self._padded_stored_obs(idx, counts, width), self.obs_encoding, self.obs_dim)

    def decode_obs(self, idx: np.ndarray | list[int] | slice | int | None = None,
                   t_end: int | None = None) -> np.ndarray:
        """Float32 observations (B, T, D) of episodes ``idx`` (all if None), zero-padded beyond o_length.

        T is ``max_len + 1`` cropped like ``[:t_end]``; a scalar ``idx`` gives (T, D).
        """
        width = len(range(self.max_len + 1)[slice(None, t_end)])
        if isinstance(idx, (int, np.integer)) or (isinstance(idx, np.ndarray) and idx.ndim == 0):
            return self._padded_float_obs(self._episodes([int(idx)]), width)[0]
        return self._padded_float_obs(self._episodes(idx), width)

    # ------------------------------------------------------------------ batching
    def batch(self, idx: np.ndarray | list[int] | slice,
              device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Decode episodes ``idx`` into torch tensors (on ``device``, default CPU), padded to the longest
        episode in the batch.

        Returns obs (B, L+1, D) float32, actions (B, L) long (padding 0), mask (B, L) bool,
        subgoals (B, L) long (padding -1), lengths (B,) long, where L is the batch's longest length.
        Only the batch's rows of the flat arrays are read and decoded.
        """
        idx = self._episodes(np.atleast_1d(np.asarray(idx)) if not isinstance(idx, slice) else idx)
        lengths = self.lengths[idx].copy()
        l_max = int(lengths.max()) if lengths.size else 0
        step_rows = _ragged_rows(self.step_offsets[idx], lengths)
        mask = _pad_mask(lengths, l_max)
        actions = np.zeros((idx.shape[0], l_max), dtype=np.int64)
        actions[mask] = self.actions_flat[step_rows]
        subgoals = np.full((idx.shape[0], l_max), -1, dtype=np.int64)
        subgoals[mask] = self.subgoals_flat[step_rows]
        out = {
            "obs": torch.from_numpy(self._padded_float_obs(idx, l_max + 1)),
            "actions": torch.from_numpy(actions),
            "mask": torch.from_numpy(mask),
            "subgoals": torch.from_numpy(subgoals),
            "lengths": torch.from_numpy(lengths),
        }
        if device is not None and torch.device(device).type != "cpu":
            out = {k: v.pin_memory().to(device, non_blocking=True) for k, v in out.items()}
        return out

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
        """A new in-memory dataset with episodes ``idx`` (in that order)."""
        idx = self._episodes(idx)
        lengths = self.lengths[idx].copy()
        step_rows = _ragged_rows(self.step_offsets[idx], lengths)
        return Trajectories(
            obs_flat=np.take(self.obs_flat, _ragged_rows(self.obs_offsets[idx], lengths + 1), axis=0),
            actions_flat=self.actions_flat[step_rows],
            lengths=lengths,
            subgoals_flat=self.subgoals_flat[step_rows],
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
        """Write the dataset as a folder (meta.json + flat .npy files); returns the folder path.

        Each file is written beside its target and renamed over it, so saving over the folder a
        dataset was memory-mapped from leaves the mapped data intact.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        task_names = sorted(set(self.tasks))
        lookup = {t: i for i, t in enumerate(task_names)}
        arrays = {
            "obs_flat": self.obs_flat,
            "actions_flat": self.actions_flat,
            "lengths": self.lengths,
            "subgoals_flat": self.subgoals_flat,
            "task_ids": np.array([lookup[t] for t in self.tasks], dtype=np.int64),
        }
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "layout": "flat",
            "num_episodes": len(self),
            "num_steps": self.num_steps,
            "max_len": self.max_len,
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
            tmp = path / (_FILES[k] + ".tmp")
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(a), allow_pickle=False)
            os.replace(tmp, path / _FILES[k])
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
        if not isinstance(meta, dict):
            raise ValueError(f"{meta_file}: expected a JSON object, got {type(meta).__name__}")
        if meta.get("format") != FORMAT_NAME:
            raise ValueError(f"{meta_file}: field 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
        version = meta.get("format_version", meta.get("version"))
        if version != FORMAT_VERSION:
            old = " (the old padded layout)" if version == 1 else ""
            raise ValueError(f"{meta_file}: field 'format_version' is {version!r}{old}, this code reads "
                             f"version {FORMAT_VERSION} (flat layout) only; regenerate the data with "
                             f"`internal-rl data` (or generate_pinpad(...).save(...))")
        for key in ("num_episodes", "num_steps", "obs_dim", "obs_encoding", "task_names", "arrays", "meta"):
            if key not in meta:
                raise ValueError(f"{meta_file}: field {key!r} is missing")
        if meta["obs_encoding"] not in OBS_ENCODINGS:
            raise ValueError(f"{meta_file}: field 'obs_encoding' is {meta['obs_encoding']!r}, "
                             f"expected one of {OBS_ENCODINGS}")
        n, s, d = int(meta["num_episodes"]), int(meta["num_steps"]), int(meta["obs_dim"])
        stored_dim, obs_dtype = _stored_obs_spec(meta["obs_encoding"], d)
        int64 = np.dtype(np.int64)
        expected = {
            "obs_flat": ((s + n, stored_dim), obs_dtype),
            "actions_flat": ((s,), int64),
            "lengths": ((n,), int64),
            "subgoals_flat": ((s,), int64),
            "task_ids": ((n,), int64),
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
                                 f"{entry['dtype']}, inconsistent with expected {shape} {dtype} (from "
                                 f"num_episodes, num_steps, obs_dim, obs_encoding)")
            if not file.is_file():
                raise ValueError(f"{where}: file is missing")
            try:
                a = np.load(file, mmap_mode="r" if (mmap and key == "obs_flat") else None, allow_pickle=False)
            except Exception as e:  # truncated or garbled .npy
                raise ValueError(f"{where}: cannot be read as a .npy array ({e})") from e
            if a.shape != shape:
                raise ValueError(f"{where}: shape {a.shape}, expected {shape} from meta.json")
            if a.dtype != dtype:
                raise ValueError(f"{where}: dtype {a.dtype}, expected {dtype} from meta.json")
            arrays[key] = a
        lengths_where = f"{path / _FILES['lengths']} (field 'lengths')"
        lengths = arrays["lengths"]
        if n and lengths.min() < 0:
            raise ValueError(f"{lengths_where}: lengths must be >= 0, got {lengths.min()}")
        if int(lengths.sum()) != s:
            raise ValueError(f"{lengths_where}: lengths sum to {int(lengths.sum())}, but meta.json num_steps "
                             f"(and actions_flat/subgoals_flat) say {s}")
        if "max_len" in meta and n and int(meta["max_len"]) != int(lengths.max()):
            raise ValueError(f"{lengths_where}: longest length {int(lengths.max())}, but meta.json max_len says "
                             f"{meta['max_len']}")
        task_names = list(meta["task_names"])
        ids = arrays["task_ids"]
        if ids.size and (ids.min() < 0 or ids.max() >= len(task_names)):
            raise ValueError(f"{path / _FILES['task_ids']} (field 'task_ids'): values must lie in "
                             f"0..{len(task_names) - 1} (meta.json task_names)")
        traj = cls.__new__(cls)
        traj.obs_flat, traj.actions_flat, traj.lengths, traj.subgoals_flat = (
            arrays["obs_flat"], arrays["actions_flat"], lengths, arrays["subgoals_flat"])
        traj.tasks = [task_names[i] for i in ids.tolist()]
        traj.obs_dim, traj.obs_encoding, traj.meta = d, meta["obs_encoding"], meta["meta"]
        traj._validate({k: f"{path / f} (field {k!r})" for k, f in _FILES.items()})
        return traj

    # ------------------------------------------------------------------ validation
    def _validate(self, where: dict[str, str]) -> None:
        """Check shapes, dtypes and values, and derive the offsets; ``where`` names each field's origin."""
        if self.obs_encoding not in OBS_ENCODINGS:
            raise ValueError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {self.obs_encoding!r}")
        lengths, actions, subgoals, obs = self.lengths, self.actions_flat, self.subgoals_flat, self.obs_flat
        for key, a in (("lengths", lengths), ("actions_flat", actions), ("subgoals_flat", subgoals)):
            if not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype != np.int64:
                raise ValueError(f"{where[key]}: expected a 1-d int64 array, got "
                                 f"{getattr(a, 'shape', type(a).__name__)} {getattr(a, 'dtype', '')}")
        n = lengths.shape[0]
        if n and lengths.min() < 0:
            raise ValueError(f"{where['lengths']}: lengths must be >= 0, got {lengths.min()}")
        s = int(lengths.sum())
        if actions.shape != (s,):
            raise ValueError(f"{where['actions_flat']}: expected ({s},) (sum of lengths), got {actions.shape}")
        if subgoals.shape != (s,):
            raise ValueError(f"{where['subgoals_flat']}: expected ({s},) (sum of lengths), got {subgoals.shape}")
        stored_dim, obs_dtype = _stored_obs_spec(self.obs_encoding, self.obs_dim)
        if not isinstance(obs, np.ndarray) or obs.shape != (s + n, stored_dim) or obs.dtype != obs_dtype:
            hint = " (padded arrays: use Trajectories.from_padded)" if getattr(obs, "ndim", 0) == 3 else ""
            raise ValueError(f"{where['obs_flat']}: expected {(s + n, stored_dim)} {obs_dtype} (sum of lengths + 1, "
                             f"encoding {self.obs_encoding}, obs_dim {self.obs_dim}), got "
                             f"{getattr(obs, 'shape', type(obs).__name__)} {getattr(obs, 'dtype', '')}{hint}")
        if len(self.tasks) != n:
            raise ValueError(f"{where['task_ids']}: {len(self.tasks)} tasks for {n} episodes")
        if s and actions.min() < 0:
            raise ValueError(f"{where['actions_flat']}: negative action inside an episode")
        if s and subgoals.min() < -1:
            raise ValueError(f"{where['subgoals_flat']}: subgoal ids must be >= -1, got {subgoals.min()}")
        self.step_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.obs_offsets = self.step_offsets + np.arange(n + 1, dtype=np.int64)
