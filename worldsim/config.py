"""Build typed dataclass configs from plain dicts (hydra's YAML, checkpoint JSON), strictly."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _fits(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` is of the simple type ``hint`` (bool, int, float, str, their Optional, a tuple or list
    of them); None where the hint is not one of those (not checked)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if value is None:
            return type(None) in args
        return _fits(value, rest[0]) if len(rest) == 1 else None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list) and args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)):
        if not isinstance(value, (list, tuple)):
            return False
        inner = [_fits(v, args[0]) for v in value]
        return None if None in inner else all(inner)
    return None


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return f"{_describe(rest[0])} or null" if len(rest) == 1 else str(hint)
    if origin in (tuple, list):
        return f"a list of {_describe(args[0]).removeprefix('a ')}s"
    return _WORDS.get(hint, str(hint))


def from_dict(cls: type[T], d: dict[str, Any] | None, where: str = "") -> T:
    """``cls(**d)`` that rejects unknown keys with the list of known ones, refuses a value of the wrong type in a
    simple field (``collect.frames=abc``, ``agent_eval.episodes=2.5``) with one line naming the setting, and
    turns lists into tuples where the field is a tuple."""
    d = dict(d or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown {where or cls.__name__} option(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for k, v in d.items():
        if _fits(v, hints[k]) is False:
            raise ValueError(f"{where or cls.__name__}.{k} must be {_describe(hints[k])}, got {v!r}")
        if typing.get_origin(hints[k]) is tuple and isinstance(v, (list, tuple)):
            d[k] = tuple(v)
    return cls(**d)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> JSON-able dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
