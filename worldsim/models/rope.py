"""3D rotary position embedding over (t, y, x).

The head dimension is split in three even parts, one per axis. Because a rotary
attention score depends only on position *offsets*, the frame index t can grow
without bound while a window of frames slides: shifting every t by the same amount
leaves attention unchanged (up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def split_head_dim(head_dim: int) -> tuple[int, int, int]:
    """Dimensions given to (t, y, x); each even, summing to head_dim."""
    if head_dim % 8:
        raise ValueError(f"head_dim must be a multiple of 8 for 3D rotary, got {head_dim}")
    dt = head_dim // 4 // 2 * 2
    dy = (head_dim - dt) // 2 // 2 * 2
    return dt, dy, head_dim - dt - dy


class Rotary3D(nn.Module):
    def __init__(self, head_dim: int, theta: float = 10_000.0) -> None:
        super().__init__()
        self.dims = split_head_dim(head_dim)
        for name, d in zip("tyx", self.dims, strict=True):
            freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
            self.register_buffer(f"freqs_{name}", freqs.float(), persistent=False)

    def angles(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos: (..., 3) integer or float (t, y, x) -> cos, sin of shape (..., head_dim / 2)."""
        pos = pos.float()
        ang = torch.cat(
            [pos[..., 0:1] * self.freqs_t, pos[..., 1:2] * self.freqs_y, pos[..., 2:3] * self.freqs_x], dim=-1
        )
        return ang.cos(), ang.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, heads, S, head_dim); cos, sin: (S, head_dim / 2) or (B, 1, S, head_dim / 2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)
