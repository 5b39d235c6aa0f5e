"""Pre-encoded latents: every episode of a dataset encoded once by a VAE, so dynamics training skips the encoder.

Beside a dataset's frame shards, ``latents-<vae id>/`` holds one latent shard per frame shard (same file
name): tensors ``ep{j}/latents`` float32 (T, C, h, w), already normalised by the VAE's latent statistics.
The VAE id is a checksum of the VAE's weights and statistics, so another VAE gets another folder and its
latents are rebuilt; each latent shard also records the checksums of the frame shard it came from, and is
rebuilt when those change.

Episodes are encoded whole (in chunks that overlap by the encoder's temporal reach, which gives exactly the
whole-episode encoding): each frame's latent sees its real past, as the streaming decoder does. A clip
encoded on its own pads its first frame against itself instead, so the two agree exactly for clips that
start an episode and, for other clips, from the encoder's reach on (``encoder_reach``: 8 frames for the
default VAE).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from worldsim.data.dataset import EpisodeDataset, EpisodeRef
from worldsim.data.episodes import DatasetError
from worldsim.integrity import CHECKSUMS, save_checked, verify

FORMAT = "worldsim.latents"
VERSION = "1"


def vae_id(tensors_checksums: str, latent_mean, latent_std) -> str:
    """8 hex digits naming a VAE by its weights' checksums and its latent statistics."""
    key = json.dumps([tensors_checksums, [float(x) for x in latent_mean], [float(x) for x in latent_std]])
    return f"{zlib.crc32(key.encode()) & 0xFFFFFFFF:08x}"


def vae_file_id(path: str | Path, meta: dict[str, Any]) -> str:
    """The id of a VAE file (its stored checksums, or its bytes for a file written before them)."""
    with safe_open(str(path), framework="pt") as f:
        sums = (f.metadata() or {}).get(CHECKSUMS)
    if sums is None:
        sums = f"{zlib.crc32(Path(path).read_bytes()) & 0xFFFFFFFF:08x}"
    return vae_id(sums, meta.get("latent_mean", []), meta.get("latent_std", []))


def encoder_reach(vae) -> int:
    """How many past frames a latent depends on: the sum of (temporal kernel - 1) over the encoder's convs."""
    from worldsim.models.causal_conv import CausalConv3d

    return sum(m.kt - 1 for m in vae.encoder.modules() if isinstance(m, CausalConv3d))


@torch.no_grad()
def encode_episode(encode, frames: np.ndarray, reach: int, chunk: int = 64) -> np.ndarray:
    """uint8 frames (T, H, W, 3) -> normalised latents float32 (T, C, h, w), equal to encoding the whole
    episode at once, in chunks of ``chunk`` frames (each re-reading the ``reach`` frames before it)."""
    out = []
    for s in range(0, len(frames), chunk):
        lo = max(0, s - reach)
        z = encode(torch.from_numpy(np.ascontiguousarray(frames[lo : s + chunk]))[None])[0, s - lo :]
        out.append(z.float().cpu().numpy())
    return np.concatenate(out)


def _frame_sums(path: Path) -> str:
    with safe_open(str(path), framework="numpy") as f:
        return (f.metadata() or {}).get(CHECKSUMS) or f"{zlib.crc32(path.read_bytes()) & 0xFFFFFFFF:08x}"


class LatentStore:
    """Read access to the latents of a dataset made by one VAE (``vid``): ``read(ref, start, stop)``.
    Refuses (DatasetError) latents that are missing, of another VAE or of frames that have changed."""

    def __init__(self, data: EpisodeDataset, vid: str) -> None:
        self.data, self.vid = data, vid
        self.folder = data.root / f"latents-{vid}"
        self.paths = [self.folder / s.path.name for s in data.shards]
        for shard, path in zip(data.shards, self.paths, strict=True):
            problem = self.problem(shard.path, path)
            if problem:
                raise DatasetError(f"{path}: {problem}; encode the dataset again (dynamics training does it "
                                   "itself when dynamics.train.pre_encode=true)")
        self._handles: dict[int, Any] = {}

    def problem(self, frames: Path, path: Path) -> str | None:
        """Why the latent shard ``path`` cannot serve the frame shard ``frames`` (None: it can)."""
        if not path.is_file():
            return "no latent shard"
        try:
            with safe_open(str(path), framework="numpy") as f:
                header = f.metadata() or {}
        except (SafetensorError, OSError) as e:
            return f"unreadable ({e})"
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            return f"not a worldsim latent shard of version {VERSION}"
        if header.get("vae_id") != self.vid:
            return f"made by another VAE (id {header.get('vae_id')}, this one is {self.vid})"
        if header.get("frames_checksums") != _frame_sums(frames):
            return f"made from other frames than {frames.name} holds now"
        verify(path, DatasetError, "delete it: training encodes it again")
        return None

    def read(self, ref: EpisodeRef, start: int, stop: int) -> np.ndarray:
        """Normalised latents (stop - start, C, h, w) of steps [start, stop) of an episode."""
        f = self._handles.get(ref.shard)
        if f is None:
            f = self._handles[ref.shard] = safe_open(str(self.paths[ref.shard]), framework="numpy")
        return f.get_slice(f"ep{ref.j}/latents")[start:stop]

    def __getstate__(self):  # DataLoader workers reopen the files
        return dict(self.__dict__, _handles={})


def ensure_latents(data: EpisodeDataset, encode, vae, vid: str, log=print) -> LatentStore:
    """Encode every frame shard of ``data`` whose latents (for VAE ``vid``) are missing or stale; -> the store.
    ``encode``: uint8 (B, T, H, W, 3) -> normalised latents (B, T, C, h, w) (a LatentEncoder)."""
    folder = data.root / f"latents-{vid}"
    folder.mkdir(exist_ok=True)
    probe = LatentStore.__new__(LatentStore)
    probe.vid = vid
    todo = [(s, folder / s.path.name) for s in data.shards if probe.problem(s.path, folder / s.path.name)]
    reach = encoder_reach(vae)
    if todo:
        log(f"encoding {len(todo)} of {len(data.shards)} shards once with the VAE into {folder} (reach {reach} frames)")
    for shard, path in todo:
        tensors = {f"ep{j}/latents": encode_episode(encode, shard.read(j, fields=("frames",))["frames"], reach)
                   for j in range(len(shard))}
        header = {"format": FORMAT, "version": VERSION, "vae_id": vid, "frames_checksums": _frame_sums(shard.path)}
        save_checked(path, tensors, header, DatasetError)
    return LatentStore(data, vid)
