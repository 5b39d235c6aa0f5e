"""Open-loop fidelity: generated frames against the real ones they replay, next to copying the last frame."""

from __future__ import annotations

import numpy as np
import torch

from worldsim.frames import to_model, to_uint8
from worldsim.metrics.image import psnr_frames, ssim_frames
from worldsim.world import World


def fidelity_at(real: np.ndarray, gen: np.ndarray, c: int, horizons) -> dict[str, dict[str, float]]:
    """PSNR/SSIM of generated frames (E, H, ...) against real clips (E, c + H, ...) at each horizon, next to
    copying the last context frame."""
    out = {}
    for h in horizons:
        r, g, last = real[:, c + h - 1], gen[:, h - 1], real[:, c - 1]
        out[str(h)] = {
            "psnr": float(psnr_frames(g, r).mean()), "ssim": float(ssim_frames(g, r).mean()),
            "copy_last_psnr": float(psnr_frames(last, r).mean()), "copy_last_ssim": float(ssim_frames(last, r).mean()),
        }
    return out


def reconstruct(world: World, clips: np.ndarray) -> np.ndarray:
    """Real clips (E, T, H, W, 3) through the world's VAE (encode, decode): what the world model could at best show."""
    with torch.no_grad():
        return np.stack([to_uint8(world.vae.decode(world.vae.encode(to_model(c[None], world.device))))[0] for c in clips])
