"""Rectified flow with per-frame noise levels (diffusion forcing).

A level ``s`` in [0, 1] interpolates between data (s = 0) and Gaussian noise
(s = 1): ``x_s = (1 - s) x0 + s eps``; the network predicts the velocity
``eps - x0``, and Euler steps ``x <- x + (s_next - s) v`` walk from noise to data.
Every frame has its own level: drawn independently per frame in training, and
laid out by :func:`autoregressive_schedule` at sampling time.
"""

from __future__ import annotations

import torch


def sample_levels(
    batch: int, frames: int, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Independent logit-normal levels per frame: (B, T) in (0, 1), dense in the middle where learning is hardest."""
    z = torch.randn(batch, frames, generator=generator, device=device) * std + mean
    return torch.sigmoid(z)


def add_noise(x0: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x0, noise: (B, T, ...); levels: (B, T) -> x_s of x0's shape."""
    s = levels.reshape(*levels.shape, *([1] * (x0.ndim - 2))).to(x0.dtype)
    return (1 - s) * x0 + s * noise


def draft_inputs(z0: torch.Tensor, level: float, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``commit=draft`` layout of a clip: each frame's input is its previous frame noised to ``level`` (the
    first frame: itself). z0, noise (B, T, C, h, w) -> (inputs of z0's shape, levels (B, T))."""
    levels = torch.full(z0.shape[:2], level, device=z0.device)
    return add_noise(torch.cat([z0[:, :1], z0[:, :-1]], 1), levels, noise), levels


def velocity(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The regression target: d x_s / d s = noise - x0."""
    return noise - x0


def timesteps(steps: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """Levels visited by an Euler sampler of ``steps`` steps: (steps + 1,) from 1 down to 0.

    ``shift`` > 1 spends more of the steps at high noise (t' = shift t / (1 + (shift - 1) t)).
    """
    if not 1 <= steps <= 64:
        raise ValueError(f"sampling steps must be between 1 and 64, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1, device=device)
    return shift * t / (1 + (shift - 1) * t)


def autoregressive_schedule(frames: int, steps: int, context_level: float, shift: float = 1.0) -> torch.Tensor:
    """The noise level of every frame at every sampling iteration, as an explicit matrix.

    Returns ``M`` of shape ``(frames * steps + 1, frames)``: row ``r`` holds the
    level of each frame when the network is called for the r-th time (the last row
    is the state after the last frame finished). Frames are generated one after
    another: a frame is pure noise (1) until its turn, walks down
    :func:`timesteps` during its ``steps`` iterations, and once finished is seen
    by later frames at ``context_level`` (clean frames are re-noised slightly so
    that errors do not compound over long rollouts).
    """
    ts = timesteps(steps, shift)
    m = torch.ones(frames * steps + 1, frames)
    for f in range(frames):
        rows = slice(f * steps, (f + 1) * steps)
        m[rows, :f] = context_level
        m[rows, f] = ts[:-1]
    m[-1, :] = context_level
    return m
