"""Export a trained world: VAE + dynamics + start contexts -> one world file (``train.py stage=export``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import from_dict
from ..data.dataset import EpisodeDataset
from ..engine.simulator import SamplerConfig
from ..models.vae import load_vae
from ..world import save_world
from .dynamics_trainer import load_dynamics

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ExportConfig:
    """What goes into the world file (``export.*`` overrides)."""

    out: str = "checkpoints/world.safetensors"
    """Where the world file is written."""
    contexts: int = 8
    """Start contexts stored with the world (taken from different episodes)."""
    context_frames: int = 8
    """Frames per start context (at most the DiT window)."""
    skip_frames: int = 50
    """Start contexts begin after this many frames of an episode where it is long enough (CarRacing zooms in
    during its first 50 frames)."""
    weights_dtype: str = "float16"
    """Storage dtype of the weights: float32, float16 (half the size) or bfloat16."""
    seed: int = 0
    """Chooses the episodes and offsets of the start contexts."""


def pick_contexts(data: EpisodeDataset, n: int, length: int, seed: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n clips of ``length`` frames from n different episodes (spread over the dataset), random offsets.
    -> frames uint8 (n, T, H, W, 3), actions (n, T[, ...])."""
    refs = [r for r in data.refs if r.length >= length]
    if not refs:
        raise ValueError(f"{data.root}: no episode has {length} frames for a start context; lower export.context_frames")
    rng = np.random.default_rng(seed)
    chosen = [refs[i] for i in np.linspace(0, len(refs) - 1, min(n, len(refs))).round().astype(int)]
    frames, actions = [], []
    for ref in chosen:
        last = ref.length - length
        start = int(rng.integers(min(skip, last), last + 1))
        clip = data.read(ref, start, start + length, fields=("frames", "actions"))
        frames.append(clip["frames"])
        actions.append(clip["actions"])
    return np.stack(frames), np.stack(actions)


def export_world(cfg: ExportConfig, data_dir, run_dir, sampler: SamplerConfig | None = None) -> Path:
    """Build the world file from ``run_dir/{vae,dynamics}.safetensors`` and start contexts from ``data_dir``."""
    if cfg.weights_dtype not in DTYPES:
        raise ValueError(f"export.weights_dtype must be one of {sorted(DTYPES)}, got {cfg.weights_dtype!r}")
    run_dir = Path(run_dir)
    vae, vae_meta = load_vae(run_dir / "vae.safetensors")
    dit, dyn_meta = load_dynamics(run_dir / "dynamics.safetensors")
    if cfg.context_frames > dit.cfg.window:
        raise ValueError(f"export.context_frames={cfg.context_frames} exceeds the DiT window {dit.cfg.window}")
    data = EpisodeDataset(data_dir)
    if data.source.get("action_space") != dit.action_space:
        raise ValueError(f"{data_dir} records {data.source.get('action_space')}, but the dynamics model was trained "
                         f"on {dit.action_space}: export with the data_dir it was trained on")
    frames, actions = pick_contexts(data, cfg.contexts, cfg.context_frames, cfg.seed, cfg.skip_frames)
    sampler = sampler or from_dict(SamplerConfig, dyn_meta.get("sampler"), "sampler")
    c = vae.cfg.latent_channels
    meta = {
        "vae_step": vae_meta.get("step"), "vae_psnr": vae_meta.get("psnr"), "dynamics_step": dyn_meta.get("step"),
        "dynamics_eval": {k: v for k, v in dyn_meta.items() if k.startswith(("heldout_", "rollout_"))},
    }
    return save_world(
        cfg.out, vae, dit, source=dyn_meta.get("source") or data.source, sampler=sampler,
        latent_mean=vae_meta.get("latent_mean", [0.0] * c), latent_std=vae_meta.get("latent_std", [1.0] * c),
        context_frames=frames, context_actions=actions, meta=meta, weights_dtype=DTYPES[cfg.weights_dtype],
    )
