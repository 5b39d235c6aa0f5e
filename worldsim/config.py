"""Build typed dataclass configs from plain dicts (hydra's YAML, checkpoint JSON), strictly."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], d: dict[str, Any] | None, where: str = "") -> T:
    """``cls(**d)`` that rejects unknown keys with the list of known ones and turns lists into tuples where the field is a tuple."""
    d = dict(d or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown {where or cls.__name__} option(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for k, v in d.items():
        if typing.get_origin(hints[k]) is tuple and isinstance(v, (list, tuple)):
            d[k] = tuple(v)
    return cls(**d)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> JSON-able dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
