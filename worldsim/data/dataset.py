"""A folder of episode shards, and fixed-length training clips read from it lazily."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ..integrity import log
from .episodes import DatasetError, Episode, EpisodeShard

Split = Literal["all", "train", "heldout"]

# Keys of the source description that every shard of one dataset must agree on.
_SOURCE_KEYS = ("env_id", "frame_size", "action_space")


def in_split(index: int, split: Split, heldout_every: int) -> bool:
    """Held-out episodes are every ``heldout_every``-th global index, so the split is stable as data grows."""
    if split == "all":
        return True
    held = index % heldout_every == heldout_every - 1
    return held if split == "heldout" else not held


@dataclass(frozen=True)
class EpisodeRef:
    shard: int
    j: int
    index: int
    length: int


class EpisodeDataset:
    """Every shard (``*.safetensors``) of a folder, checked for one consistent source."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no dataset folder here; collect one with `python train.py stage=collect`")
        paths = sorted(p for p in self.root.glob("*.safetensors") if not p.name.startswith("."))
        self.shards = [EpisodeShard(p, warn_unverified=False) for p in paths]
        old = [s.path.name for s in self.shards if not s.verified]
        if old:
            log.warning(f"warning: {len(old)} of {len(paths)} shards in {self.root} carry no checksums (written by an "
                        f"older worldsim, e.g. {old[0]}) and are read unverified; add them with "
                        f"`python -m worldsim.integrity {self.root}/*.safetensors`")
        self.refs: list[EpisodeRef] = []
        seen: dict[int, Path] = {}
        for s, shard in enumerate(self.shards):
            self._check_source(shard)
            for j, ep in enumerate(shard.episodes):
                idx = int(ep.get("index", -1))
                if idx >= 0 and idx in seen:
                    raise DatasetError(f"{shard.path}: episode index {idx} is also in {seen[idx]}; remove one copy")
                seen[idx] = shard.path
                self.refs.append(EpisodeRef(s, j, idx, int(ep["length"])))

    def _check_source(self, shard: EpisodeShard) -> None:
        first = self.shards[0]
        for key in _SOURCE_KEYS:
            if shard.source.get(key) != first.source.get(key):
                raise DatasetError(
                    f"{shard.path}: {key}={shard.source.get(key)!r} but {first.path} has {first.source.get(key)!r}; "
                    "one dataset folder holds one source"
                )

    @property
    def source(self) -> dict[str, Any]:
        return self.shards[0].source if self.shards else {}

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def num_frames(self) -> int:
        return sum(r.length for r in self.refs)

    def indices(self) -> set[int]:
        return {r.index for r in self.refs}

    def episode(self, i: int) -> Episode:
        r = self.refs[i]
        return self.shards[r.shard].episode(r.j)

    def episodes(self, split: Split = "all", heldout_every: int = 10) -> list[EpisodeRef]:
        return [r for r in self.refs if in_split(r.index, split, heldout_every)]

    def read(self, ref: EpisodeRef, start: int, stop: int, fields=None) -> dict[str, np.ndarray]:
        kw = {} if fields is None else {"fields": fields}
        return self.shards[ref.shard].read(ref.j, start, stop, **kw)


class ClipDataset(Dataset):
    """Contiguous clips of ``length`` steps; a clip never spans two episodes.

    Items are dicts of tensors: ``frames`` uint8 (L, H, W, 3), ``actions`` (L, ...),
    ``rewards`` float32 (L,), ``terminated`` / ``truncated`` bool (L,), and ``start``
    (the step in its episode where the clip begins). Only the
    clip's bytes are read from disk.
    """

    def __init__(
        self,
        data: EpisodeDataset,
        length: int,
        split: Split = "train",
        stride: int = 1,
        heldout_every: int = 10,
        fields: tuple[str, ...] | None = None,
    ) -> None:
        self.data, self.length, self.fields = data, length, fields
        self.items: list[tuple[EpisodeRef, int]] = []
        for ref in data.episodes(split, heldout_every):
            self.items.extend((ref, s) for s in range(0, ref.length - length + 1, stride))
        if not self.items:
            hint = f" (one episode in {heldout_every} is held out: lower heldout_every)" if split == "heldout" else ""
            raise DatasetError(
                f"{data.root}: no {split} episode has {length} steps ({len(data)} episodes in all){hint}; "
                "collect more data or use shorter clips"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ref, start = self.items[i]
        arrays = self.data.read(ref, start, start + self.length, self.fields)
        item = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        item["start"] = torch.tensor(start)  # step of the clip's first frame in its episode (0: a reset frame)
        return item
