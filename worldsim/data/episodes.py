"""Episode shards: whole episodes stored as one safetensors file, with JSON metadata.

Every recorder in worldsim writes this format, and training reads it.

Alignment (all arrays of one episode have the same length T)::

    frames[t]      uint8 (H, W, 3)  the observation at step t (frames[0] is the reset frame)
    actions[t]     the action that led to frames[t]; actions[0] is a placeholder
                   (0 / zeros) because nothing led to the reset frame
    rewards[t]     float32, the reward received on arriving at frames[t] (0 at t = 0)
    terminated[t]  bool, frames[t] is a terminal state
    truncated[t]   bool, the episode was cut after frames[t] (time limit, Ctrl-C, ...)

Tensor keys are ``ep{j}/frames`` ... for the j-th episode of the shard. The file
metadata holds ``format`` = ``worldsim.episodes``, ``version`` and ``meta``: a JSON
object with the source (env id, frame size, fps, action space, policy) and, per
episode, its global index, seed and length.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from worldsim.integrity import save_checked, verify

FORMAT = "worldsim.episodes"
VERSION = "1"
FIELDS = ("frames", "actions", "rewards", "terminated", "truncated")


class DatasetError(ValueError):
    """A dataset file is missing, truncated, foreign or inconsistent."""


DAMAGED_FIX = ("delete or move it, then re-run collection to replace it (it records the missing episodes again); "
               "a shard of a recording cannot be recovered")


@dataclass
class Episode:
    """One whole episode; see the module docstring for the alignment of the arrays."""

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-able facts about the episode: global ``index``, ``seed``, ..."""

    def __post_init__(self) -> None:
        t = len(self.frames)
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"episode frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {self.frames.shape}")
        for name in FIELDS[1:]:
            if len(getattr(self, name)) != t:
                raise ValueError(f"episode {name} has length {len(getattr(self, name))}, frames have {t}")
        if t == 0:
            raise ValueError("an episode needs at least its reset frame")

    def __len__(self) -> int:
        return len(self.frames)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "frames": np.ascontiguousarray(self.frames),
            "actions": np.ascontiguousarray(self.actions),
            "rewards": np.ascontiguousarray(self.rewards, dtype=np.float32),
            "terminated": np.ascontiguousarray(self.terminated, dtype=bool),
            "truncated": np.ascontiguousarray(self.truncated, dtype=bool),
        }


def write_shard(path: str | Path, episodes: list[Episode], source: dict[str, Any]) -> Path:
    """Write ``episodes`` to one shard atomically (temporary file, then rename).

    ``source`` describes where the data comes from (env id, frame size, fps,
    action space, policy); it is stored as JSON with the per-episode facts.
    """
    path = Path(path)
    if not episodes:
        raise ValueError("a shard needs at least one episode")
    tensors: dict[str, np.ndarray] = {}
    for j, ep in enumerate(episodes):
        for name, arr in ep.arrays().items():
            tensors[f"ep{j}/{name}"] = arr
    meta = {"source": source, "episodes": [dict(ep.info, length=len(ep)) for ep in episodes]}
    return save_checked(path, tensors, {"format": FORMAT, "version": VERSION, "meta": json.dumps(meta)}, DatasetError)


class EpisodeShard:
    """Read access to one shard; episodes and clips are read lazily, slice by slice.

    The file is checked when opened: a truncated, foreign or inconsistent file
    raises :class:`DatasetError` naming the file and the problem.
    """

    def __init__(self, path: str | Path, warn_unverified: bool = True) -> None:
        self.path = Path(path)
        self._handle = None
        self._pid = None
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such file")
        try:
            with safe_open(str(self.path), framework="numpy") as f:
                header = f.metadata() or {}
                keys = set(f.keys())
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
        except FileNotFoundError:
            raise DatasetError(f"{self.path}: no such file") from None
        except (SafetensorError, OSError) as e:
            raise DatasetError(
                f"{self.path}: not a readable safetensors file ({e}); it may be truncated by a crash "
                f"or not a worldsim dataset: {DAMAGED_FIX}"
            ) from None
        if header.get("format") != FORMAT:
            raise DatasetError(
                f"{self.path}: a safetensors file but not a worldsim episode shard "
                f"(format={header.get('format')!r}, expected {FORMAT!r}); keep other files out of dataset folders"
            )
        if header.get("version") != VERSION:
            raise DatasetError(f"{self.path}: episode format version {header.get('version')!r}, this worldsim reads {VERSION!r}")
        try:
            meta = json.loads(header["meta"])
            self.source: dict[str, Any] = meta["source"]
            self.episodes: list[dict[str, Any]] = meta["episodes"]
        except (KeyError, json.JSONDecodeError) as e:
            raise DatasetError(f"{self.path}: damaged metadata ({e})") from None
        self.verified = verify(self.path, DatasetError, DAMAGED_FIX, warn_unverified)
        """False for a shard written before checksums (loaded unverified)."""
        for j, ep in enumerate(self.episodes):
            for name in FIELDS:
                key = f"ep{j}/{name}"
                if key not in shapes:
                    raise DatasetError(f"{self.path}: episode {j} has no '{name}' tensor")
                if shapes[key][0] != ep["length"]:
                    raise DatasetError(
                        f"{self.path}: episode {j} '{name}' has {shapes[key][0]} steps, metadata says {ep['length']}"
                    )

    def __len__(self) -> int:
        return len(self.episodes)

    def _file(self):
        # One handle per process: DataLoader workers must not share the parent's.
        if self._handle is None or self._pid != os.getpid():
            self._handle = safe_open(str(self.path), framework="numpy")
            self._pid = os.getpid()
        return self._handle

    def read(self, j: int, start: int = 0, stop: int | None = None, fields=FIELDS) -> dict[str, np.ndarray]:
        """Steps ``[start, stop)`` of episode ``j``, reading only those bytes from disk."""
        length = self.episodes[j]["length"]
        stop = length if stop is None else stop
        if not 0 <= start < stop <= length:
            raise IndexError(f"steps [{start}, {stop}) outside episode {j} of length {length} in {self.path}")
        f = self._file()
        return {name: f.get_slice(f"ep{j}/{name}")[start:stop] for name in fields}

    def episode(self, j: int) -> Episode:
        return Episode(**self.read(j), info=dict(self.episodes[j]))

    def __getstate__(self):  # picklable for DataLoader workers: reopen lazily there
        state = dict(self.__dict__)
        state["_handle"] = None
        return state
