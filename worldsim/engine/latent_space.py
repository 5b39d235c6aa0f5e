"""A world's latent space: its VAE's latents, normalised per channel by the statistics stored with the VAE.

:class:`LatentNorm` is the one place the normalisation is written (the engine, the trainer, the evaluation
and the agent's eyes all use it); :class:`LatentEncoder` turns uint8 frames into normalised latents.
"""

from __future__ import annotations

from typing import Any

import torch

from worldsim.frames import to_model
from worldsim.models.causal_conv import StreamCache
from worldsim.models.vae import CausalVAE


class LatentNorm:
    """Per-channel ``(z - mean) / std`` and back, for latents (B, T, C, h, w)."""

    def __init__(self, mean, std, channels: int, device: torch.device | str = "cpu") -> None:
        """``mean``/``std``: C numbers each (a tensor or a list); None = 0 and 1 (an unnormalised VAE)."""
        self.mean = torch.as_tensor(mean if mean is not None else [0.0] * channels, dtype=torch.float32,
                                    device=device).view(1, 1, channels, 1, 1)
        self.std = torch.as_tensor(std if std is not None else [1.0] * channels, dtype=torch.float32,
                                   device=device).view(1, 1, channels, 1, 1)

    @classmethod
    def from_meta(cls, meta: dict[str, Any], channels: int, device: torch.device | str = "cpu") -> LatentNorm:
        """From a VAE file's (or world file's) metadata: ``latent_mean`` and ``latent_std``."""
        return cls(meta.get("latent_mean"), meta.get("latent_std"), channels, device)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean


class LatentEncoder:
    """Frozen VAE plus the latent normalisation stored with it: uint8 clips -> normalised latents."""

    def __init__(self, vae: CausalVAE, meta: dict[str, Any], device) -> None:
        """``meta``: the VAE's metadata (``latent_mean``, ``latent_std``; missing: unnormalised)."""
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.norm = LatentNorm.from_meta(meta, vae.cfg.latent_channels, device)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """frames uint8 (B, T, H, W, 3) -> (B, T, C, h, w); ``cache`` streams a clip in pieces."""
        return self.norm.normalize(self.vae.encode(to_model(frames, self.norm.mean.device), cache))
