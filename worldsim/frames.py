"""Frame conversions at the boundary between users (uint8 HWC) and models (float CHW).

Users see ``uint8`` frames ``(T, H, W, 3)`` or single images ``(H, W, 3)``; models
see ``(B, T, 3, H, W)`` floats in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


def check_frames(frames: np.ndarray, what: str = "frames") -> np.ndarray:
    """Accept uint8 ``(T, H, W, 3)`` or ``(H, W, 3)``; return ``(T, H, W, 3)``. Raise a clear error otherwise."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"{what} must be uint8 RGB with values 0..255, got dtype {frames.dtype}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"{what} must be an RGB image (H, W, 3) or a clip (T, H, W, 3), got shape {frames.shape}"
        )
    if 0 in frames.shape:
        raise ValueError(f"{what} is empty (shape {frames.shape}): give at least one frame of at least 1x1 pixels")
    return frames


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 ``(T, H, W, 3)`` frames to ``(T, size, size, 3)`` (antialiased bilinear)."""
    frames = check_frames(frames)
    if frames.shape[1:3] == (size, size):
        return frames
    x = rearrange(torch.from_numpy(np.ascontiguousarray(frames)), "t h w c -> t c h w").float()  # views may be flipped
    shrink = frames.shape[1] > size or frames.shape[2] > size
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=shrink, align_corners=False)
    return rearrange(y.round().clamp(0, 255).to(torch.uint8), "t c h w -> t h w c").numpy()


def to_model(frames: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(..., T, H, W, 3)`` -> float ``(..., T, 3, H, W)`` in [-1, 1] on ``device``."""
    if isinstance(frames, np.ndarray):
        frames = np.ascontiguousarray(frames)  # torch takes no negative strides (a flipped view)
    x = torch.as_tensor(frames, device=device)
    return rearrange(x, "... h w c -> ... c h w").float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float ``(..., 3, H, W)`` in [-1, 1] -> uint8 numpy ``(..., H, W, 3)``."""
    y = x.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return rearrange(y, "... c h w -> ... h w c").cpu().numpy()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB between frames in [-1, 1], averaged over the leading batch axis of per-frame values.

    a, b: (..., 3, H, W) -> scalar.
    """
    mse = (a.float() - b.float()).pow(2).flatten(-3).mean(-1).clamp_min(1e-10)
    return (10 * torch.log10(4.0 / mse)).mean()
