"""Export a trained world: VAE + dynamics + start contexts -> one world file (``train.py stage=export``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worldsim.config import from_dict
from worldsim.data.dataset import EpisodeDataset
from worldsim.engine.sampler import SamplerConfig
from worldsim.models.vae import load_vae
from worldsim.training.dynamics_trainer import load_dynamics
from worldsim.training.history import HISTORY, history_of, joined
from worldsim.world import save_world

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ExportConfig:
    """What goes into the world file (``export.*`` overrides)."""

    out: str | None = None
    """Where the world file is written; None: ``<run_dir>/<world name>.safetensors``, the run's own export,
    which a later export of the same run replaces. Any other existing file is replaced only with ``overwrite``."""
    overwrite: bool = False
    """Allow ``out`` to replace an existing file that is not the run's own export (a shipped world, say)."""
    contexts: int = 8
    """Start contexts stored with the world (taken from different episodes)."""
    context_frames: int | None = None
    """Frames per start context (at most the DiT window); None: the window, up to 8."""
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


def run_export_path(run_dir, name: str) -> Path:
    """Where a run's world file goes by default."""
    return Path(run_dir) / f"{name}.safetensors"


def export_target(cfg: ExportConfig, run_dir, name: str) -> Path:
    """The file ``stage=export`` writes. Refuses to replace an existing file other than the run's own export
    unless ``cfg.overwrite``: a shipped world (or any file the user keeps) is never replaced by default."""
    default = run_export_path(run_dir, name)
    if cfg.out is None:
        return default
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite and out.resolve() != default.resolve():
        raise FileExistsError(f"export.out={out} exists and would be replaced; to replace it, add export.overwrite=true "
                              f"(or leave export.out unset to write the run's own {default})")
    return out


def export_world(cfg: ExportConfig, data_dir, run_dir, sampler: SamplerConfig | None = None,
                 name: str | None = None) -> Path:
    """Build the world file from ``run_dir/{vae,dynamics}.safetensors`` and start contexts from ``data_dir``.
    ``name``: the world's name (default: the one its data was recorded under), which names the default file."""
    if cfg.weights_dtype not in DTYPES:
        raise ValueError(f"export.weights_dtype must be one of {sorted(DTYPES)}, got {cfg.weights_dtype!r}")
    run_dir = Path(run_dir)
    vae, vae_meta = load_vae(run_dir / "vae.safetensors")
    dit, dyn_meta = load_dynamics(run_dir / "dynamics.safetensors")
    length = min(8, dit.cfg.window) if cfg.context_frames is None else cfg.context_frames
    if not 1 <= length <= dit.cfg.window:
        raise ValueError(f"export.context_frames={length} must be 1..{dit.cfg.window} (the DiT window); "
                         "leave it unset for the window, up to 8")
    data = EpisodeDataset(data_dir)
    if data.source.get("action_space") != dit.action_space:
        raise ValueError(f"{data_dir} records {data.source.get('action_space')}, but the dynamics model was trained "
                         f"on {dit.action_space}: export with the data_dir it was trained on")
    source = dyn_meta.get("source") or data.source
    out = export_target(cfg, run_dir, name or str(source.get("world", "world")))
    frames, actions = pick_contexts(data, cfg.contexts, length, cfg.seed, cfg.skip_frames)
    sampler = sampler or from_dict(SamplerConfig, dyn_meta.get("sampler"), "sampler")
    c = vae.cfg.latent_channels
    meta = {
        "vae_step": vae_meta.get("step"), "vae_psnr": vae_meta.get("psnr"), "dynamics_step": dyn_meta.get("step"),
        "dynamics_eval": {k: v for k, v in dyn_meta.items() if k.startswith(("heldout_", "rollout_"))},
        HISTORY: joined(history_of(vae_meta), history_of(dyn_meta)),
    }
    return save_world(
        out, vae, dit, source=source, sampler=sampler,
        latent_mean=vae_meta.get("latent_mean", [0.0] * c), latent_std=vae_meta.get("latent_std", [1.0] * c),
        context_frames=frames, context_actions=actions, meta=meta, weights_dtype=DTYPES[cfg.weights_dtype],
    )
