"""`PHASE.FIELD=VALUE` overrides of a preset's phase configs, for `internal-rl reproduce --overrides ...`.

A reproduction runs every phase at one preset; an override changes one field of one phase's config for
every seed and method (e.g. ``rl.group_size=16`` for the GRPO variant, ``pretrain.model.attn_window=24``
for a nested field). Values are parsed by the field's declared type, so a typo fails before anything runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

PHASES = ("data", "pretrain", "probe", "controllers", "discover", "rl")
MANAGED = ("out", "seed", "data", "model", "discover", "device", "resume")
"""Fields that reproduce sets itself (run folders, the seed, the device): not overridable."""
METHOD_FIELDS = {"rl": ("method",), "discover": ("always_switch", "cotrain")}
"""Fields that define the compared methods (internal, raw, beta1, cotrained): chosen with --methods instead."""


def parse_overrides(items: list[str]) -> dict[str, list[tuple[list[str], str]]]:
    """['rl.group_size=16', ...] → {'rl': [(['group_size'], '16')], ...}, with clear errors for bad syntax."""
    out: dict[str, list[tuple[list[str], str]]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ValueError(f"override {item!r}: expected PHASE.FIELD=VALUE, e.g. rl.group_size=16")
        if parts[0] not in PHASES:
            raise ValueError(f"override {item!r}: unknown phase {parts[0]!r}; phases: {', '.join(PHASES)}")
        out.setdefault(parts[0], []).append((parts[1:], value.strip()))
    return out


def _parse_value(text: str, tp: Any, where: str) -> Any:
    """`text` as a value of type `tp` (bool, int, float, str, X | None, list[X], tuple[X, ...])."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _parse_value(text, inner[0], where)
        raise ValueError(f"{where}: cannot override a field of type {tp}")
    if origin in (list, tuple):
        elem = args[0] if args else str
        items = [] if text == "" else [_parse_value(t.strip(), elem, where) for t in text.split(",")]
        return items if origin is list else tuple(items)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected true or false, got {text!r}")
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError:
            raise ValueError(f"{where}: expected {tp.__name__}, got {text!r}") from None
    raise ValueError(f"{where}: cannot override a field of type {tp}")


def _with(cfg: Any, path: list[str], text: str, where: str) -> Any:
    """A copy of dataclass `cfg` with the field at `path` set from `text` (nested dataclasses recursed)."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    name = path[0]
    if name not in fields:
        raise ValueError(f"{where}: {type(cfg).__name__} has no field {name!r}; fields: {', '.join(sorted(fields))}")
    current = getattr(cfg, name)
    if dataclasses.is_dataclass(current):
        if len(path) == 1:
            raise ValueError(f"{where}: {name} is a group of fields; set one of them, e.g. {name}.<field>=...")
        return dataclasses.replace(cfg, **{name: _with(current, path[1:], text, where)})
    if len(path) > 1:
        raise ValueError(f"{where}: {name} has no sub-fields")
    return dataclasses.replace(cfg, **{name: _parse_value(text, typing.get_type_hints(type(cfg))[name], where)})


def apply_overrides(phase: str, cfg: Any, overrides: dict[str, list[tuple[list[str], str]]]) -> Any:
    """`cfg` (the config of `phase`) with that phase's overrides applied; the config's own checks run again."""
    for path, text in overrides.get(phase, []):
        where = f"override {phase}.{'.'.join(path)}={text}"
        if len(path) == 1 and path[0] in MANAGED and not dataclasses.is_dataclass(getattr(cfg, path[0], None)):
            raise ValueError(f"{where}: reproduce sets {path[0]!r} itself (run folders, seeds and --device)")
        if len(path) == 1 and path[0] in METHOD_FIELDS.get(phase, ()):
            raise ValueError(f"{where}: {path[0]!r} defines the compared methods; choose them with --methods")
        cfg = _with(cfg, path, text, where)
    return cfg
