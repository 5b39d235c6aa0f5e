"""Action spaces as JSON, so datasets and checkpoints describe themselves."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """Describe a Discrete, MultiDiscrete or Box space as plain JSON-able data."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.astype(int).tolist()}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": space.low.astype(float).tolist(),
            "high": space.high.astype(float).tolist(),
            "shape": list(space.shape),
        }
    raise TypeError(
        f"unsupported action space {space!r}: worldsim handles Discrete, MultiDiscrete and Box actions"
    )


def space_from_dict(d: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`space_to_dict`."""
    kind = d.get("type")
    if kind == "Discrete":
        return spaces.Discrete(d["n"], start=d.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.asarray(d["nvec"], dtype=np.int64))
    if kind == "Box":
        shape = tuple(d["shape"])
        low = np.asarray(d["low"], dtype=np.float32).reshape(shape)
        high = np.asarray(d["high"], dtype=np.float32).reshape(shape)
        return spaces.Box(low, high, shape=shape, dtype=np.float32)
    raise ValueError(f"unknown action space description {d!r}")


def action_array_spec(space: spaces.Space) -> tuple[tuple[int, ...], np.dtype]:
    """Per-step shape and dtype of stored actions: Discrete -> () int64, MultiDiscrete -> (n,) int64, Box -> shape float32."""
    if isinstance(space, spaces.Discrete):
        return (), np.dtype(np.int64)
    if isinstance(space, spaces.MultiDiscrete):
        return tuple(space.nvec.shape), np.dtype(np.int64)
    if isinstance(space, spaces.Box):
        return tuple(space.shape), np.dtype(np.float32)
    raise TypeError(f"unsupported action space {space!r}")


def null_action(space: spaces.Space) -> np.ndarray:
    """The placeholder stored as the 'action' that led to a reset frame."""
    shape, dtype = action_array_spec(space)
    if isinstance(space, spaces.Discrete):
        return np.asarray(space.start, dtype=dtype)
    return np.zeros(shape, dtype=dtype)


def check_actions(space: spaces.Space, actions, batch: int | None = None) -> np.ndarray:
    """``actions`` as the array the model takes -> shape ``(batch, *shape)`` (or ``shape`` for one action), or
    a ValueError: one rule for every env. Discrete and MultiDiscrete spaces take integers only (no floats, bools
    or strings, which a cast would silently round or parse); Box spaces take finite numbers inside the bounds."""
    shape, dtype = action_array_spec(space)
    want = shape if batch is None else (batch, *shape)
    a = np.asarray(actions)
    integer = np.issubdtype(dtype, np.integer)
    what = f"an element of {space}" if batch is None else f"one action per world ({batch} in all) from {space}"
    noun = "action" if batch is None else "actions"
    if a.dtype.kind not in ("iu" if integer else "iuf"):
        kind = "integers" if integer else "numbers"
        raise ValueError(f"invalid {noun} {actions!r}: expected {what}; this space takes {kind}, got dtype {a.dtype}")
    if a.shape != want:
        raise ValueError(f"invalid {noun} {actions!r}: expected {what}, shape {want}, got shape {a.shape}")
    cast = a.astype(dtype)
    if isinstance(space, spaces.Discrete):
        ok = (cast >= space.start) & (cast < space.start + space.n)
    elif isinstance(space, spaces.MultiDiscrete):
        ok = (cast >= space.start) & (cast < space.start + space.nvec)
    else:
        ok = np.isfinite(cast) & (cast >= space.low) & (cast <= space.high)
    if not ok.all():
        bad = cast[~ok] if not shape else cast.reshape(-1, *shape)[~ok.reshape(-1, *shape).all(tuple(range(1, len(shape) + 1)))]
        raise ValueError(f"invalid {noun} {actions!r}: expected {what}; {bad[0]!r} is not in the space")
    return cast
