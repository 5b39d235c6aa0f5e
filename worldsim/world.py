"""A world: one self-describing safetensors file that rebuilds a playable world alone.

It holds both networks (VAE and dynamics DiT), their configs, the latent
normalisation, the sampler settings, the source description (env id, fps, action
space, keymap) and a handful of start contexts — short real clips a world can
start from. Kind ``world`` in :mod:`worldsim.checkpoint` terms.

Tensors: ``vae.*``, ``dit.*`` (weights, optionally stored in float16),
``contexts.frames`` uint8 (N, T, H, W, 3) and ``contexts.actions`` (N, T[, ...]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldsim.checkpoint import CheckpointError, check_fits, load_module, read_checkpoint, save_checkpoint
from worldsim.config import from_dict, to_dict
from worldsim.data.dataset import episode_limit
from worldsim.engine.latent_space import LatentEncoder
from worldsim.engine.sampler import SamplerConfig
from worldsim.engine.simulator import Simulator
from worldsim.frames import check_frames
from worldsim.models.dit import DiT, DiTConfig
from worldsim.models.vae import CausalVAE, VAEConfig
from worldsim.shipped import checkpoints_dir, known_worlds
from worldsim.spaces import action_array_spec, space_from_dict

WORLD_KIND = "world"
TRAIN_HINT = "python train.py world=NAME stage=export (after stage=collect, vae and dynamics)"


def check_world_name(name: str, where: str = "a world name") -> str:
    """A world's name is joined into paths (run folders, agent files, recordings): a relative path of plain
    parts (``carracing``, ``ALE/Pong-v5``), never absolute, never ``..``. A name read from a file is checked
    here before any path is made from it."""
    parts = str(name).replace("\\", "/").split("/")
    if not name or str(name).startswith(("/", "~")) or any(p in ("", ".", "..") for p in parts) or ":" in str(name):
        raise ValueError(f"{where} {name!r} is not a plain name (letters, digits, '-', '_', '.', and '/' between "
                         "parts; not absolute, no '..'): it would make paths outside their folder")
    return str(name)


def world_path(name: str, folder: str | Path | None = None) -> Path:
    """The checkpoint of a named world; a clear error lists the known ones."""
    check_world_name(name)
    folder = Path(folder) if folder is not None else checkpoints_dir()
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        known = known_worlds(folder)
        raise CheckpointError(
            f"no world named {name!r} in {folder}; known worlds: {', '.join(known) or 'none yet'}. "
            f"Make one with `python train.py world={name} stage=collect`, then stage=vae, stage=dynamics and stage=export"
        )
    return path


@dataclass
class World:
    """Everything a loaded world file holds. Networks are in eval mode on one device."""

    vae: CausalVAE
    dit: DiT
    source: dict[str, Any]
    """The real env behind the world: ``world`` (name), ``env_id``, ``fps``, ``action_space``, ``keymap``, ..."""
    sampler: SamplerConfig
    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    context_frames: np.ndarray
    """uint8 (N, T, H, W, 3): start contexts."""
    context_actions: np.ndarray
    """(N, T[, ...]): the actions that led to each context frame (entry 0 is a placeholder)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Everything else the file says (training steps, evaluation numbers, ...)."""
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.source.get("world", self.path.stem if self.path else "world"))

    @property
    def fps(self) -> float:
        return float(self.source.get("fps", 30))

    @property
    def frame_size(self) -> int:
        return self.vae.cfg.image_size

    @property
    def action_space(self):
        return space_from_dict(self.dit.action_space)

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    @property
    def episode_limit(self) -> int:
        """Steps after which an episode is truncated: the source env's limit (1000 where it is not recorded)."""
        return episode_limit(self.source)

    def latent_id(self) -> str:
        """8 hex digits naming the latents this world's frames become: its encoder's weights and the latent
        statistics. A new decoder (``python -m worldsim.new_decoder``) keeps it; agents and latent caches use it."""
        return _id_of({f"encoder.{k}": v for k, v in self.vae.encoder.state_dict().items()}, self)

    def vae_weights_id(self) -> str:
        """8 hex digits naming the whole VAE (encoder and decoder weights) with the latent statistics."""
        return _id_of(self.vae.state_dict(), self)

    def latent_ids(self) -> set[str]:
        """Every id under which an agent may have learned these latents: :meth:`latent_id`, the whole-VAE id
        that agents recorded before it (weights of encoder and decoder), and the whole-VAE ids of the files
        this one was made from by replacing the decoder (the encoder checked bit-identical then)."""
        whole = self.vae_weights_id()
        older = {str(d["replaced_vae_id"]) for d in self.meta.get("decoder", []) if isinstance(d, dict)
                 and d.get("replaced_vae_id")}
        return {self.latent_id(), whole} | older

    def latent_encoder(self) -> LatentEncoder:
        """uint8 frames -> this world's normalised latents (its VAE, on its device)."""
        return LatentEncoder(self.vae, {"latent_mean": self.latent_mean.tolist(), "latent_std": self.latent_std.tolist()},
                             self.device)

    def simulator(self, batch: int = 1, sampler: SamplerConfig | None = None, seed: int = 0, compile: bool = False,
                  fold_guidance: bool | None = None) -> Simulator:
        """A fresh engine for ``batch`` worlds (not started: call ``prefill``); ``fold_guidance`` as
        :class:`~worldsim.engine.simulator.Simulator`'s."""
        return Simulator(self.dit, self.vae, batch, sampler or self.sampler, self.latent_mean, self.latent_std, seed, compile,
                         fold_guidance)


def _id_of(tensors: dict[str, torch.Tensor], world: World) -> str:
    """crc32 of the checksums of ``tensors`` (as float32) with the world's latent statistics."""
    import zlib

    from worldsim.integrity import checksums_of

    named = {k: v.detach().cpu().float().contiguous() for k, v in tensors.items()}
    named["latent_mean"], named["latent_std"] = world.latent_mean.float(), world.latent_std.float()
    return f"{zlib.crc32(checksums_of(named).encode()):08x}"


def save_world(
    path: str | Path, vae: CausalVAE, dit: DiT, *, source: dict[str, Any], sampler: SamplerConfig,
    latent_mean, latent_std, context_frames: np.ndarray, context_actions: np.ndarray,
    meta: dict[str, Any] | None = None, weights_dtype: torch.dtype | None = torch.float16,
) -> Path:
    """Write a world file atomically. Contexts: uint8 (N, T, H, W, 3) frames and their (N, T[, ...]) actions."""
    frames = np.asarray(context_frames)
    if frames.ndim != 5:
        raise ValueError(f"context_frames must be uint8 (N, T, H, W, 3), got shape {frames.shape}")
    check_frames(frames[0], "context frames")
    if frames.shape[2:4] != (vae.cfg.image_size, vae.cfg.image_size):
        raise ValueError(f"context frames are {frames.shape[2:4]}, the VAE makes {vae.cfg.image_size}x{vae.cfg.image_size}")
    shape, dtype = action_array_spec(space_from_dict(dit.action_space))
    actions = np.asarray(context_actions, dtype=dtype)
    if actions.shape != frames.shape[:2] + shape:
        raise ValueError(f"context_actions must have shape {frames.shape[:2] + shape}, got {actions.shape}")
    info = dict(meta or {})
    info.update(
        config={"vae": to_dict(vae.cfg), "dit": to_dict(dit.cfg)}, action_space=dit.action_space, source=source,
        sampler=to_dict(sampler), latent_mean=[float(x) for x in torch.as_tensor(latent_mean).flatten()],
        latent_std=[float(x) for x in torch.as_tensor(latent_std).flatten()],
    )
    tensors = {"contexts.frames": torch.from_numpy(frames.copy()), "contexts.actions": torch.from_numpy(actions.copy())}
    return save_checkpoint(path, WORLD_KIND, {"vae": vae, "dit": dit}, info, tensors, weights_dtype)


def load_world(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> World:
    """Rebuild a world from its file alone (strictly: every weight present and of the right shape)."""
    path = Path(path)
    meta, tensors = read_checkpoint(path, WORLD_KIND, hint=TRAIN_HINT)
    try:
        cfg = meta.pop("config")
        vae_cfg, dit_cfg = from_dict(VAEConfig, cfg["vae"], "vae config"), DiTConfig.from_stored(cfg["dit"])
        action_space = meta.pop("action_space")
        sampler = from_dict(SamplerConfig, meta.pop("sampler"), "sampler")
        source = meta.pop("source")
        mean, std = torch.tensor(meta.pop("latent_mean")), torch.tensor(meta.pop("latent_std"))
        frames, actions = tensors["contexts.frames"].numpy(), tensors["contexts.actions"].numpy()
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: an incomplete or damaged world file ({e}); re-export it with `{TRAIN_HINT}`") from None
    c = vae_cfg.latent_channels
    if mean.shape != (c,) or std.shape != (c,) or not (torch.isfinite(mean).all() and torch.isfinite(std).all()) \
            or not (std > 0).all():
        raise CheckpointError(f"{path}: latent statistics must be {c} finite means and {c} positive stds, got "
                              f"{mean.tolist()} / {std.tolist()}; re-export it with `{TRAIN_HINT}`")
    try:
        check_world_name(str(source.get("world", path.stem)), "its stored world name")
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}; a world file must not make worldsim write outside its folders") from None
    # Configs are checked against the weights before any network is allocated.
    try:
        check_fits(lambda: CausalVAE(vae_cfg), tensors, "vae", path)
        check_fits(lambda: DiT(dit_cfg, action_space), tensors, "dit", path)
    except (TypeError, ValueError, KeyError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: its configs describe no valid model ({e}); re-export it with `{TRAIN_HINT}`") from None
    vae, dit = CausalVAE(vae_cfg), DiT(dit_cfg, action_space)
    load_module(vae, tensors, "vae", path)
    load_module(dit, tensors, "dit", path)
    vae, dit = vae.to(device=device).eval(), dit.to(device=device, dtype=dtype).eval()
    return World(vae, dit, source, sampler, mean, std, frames, actions, meta, path)
