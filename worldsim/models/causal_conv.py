"""Causal 3D convolution over video tensors, with a streaming cache.

A temporal kernel of size ``kt`` sees the current frame and the ``kt - 1`` frames
before it. Before the first frame the input is padded with copies of the first
frame itself, so a one-frame clip is a valid input and nothing depends on the
future.

The convolution is computed as a 2D convolution over the ``kt`` time taps stacked
along channels. That is the same maths as ``Conv3d`` with no temporal padding, and
on CPUs it is several times faster (oneDNN's 2D kernels are far better tuned).

Streaming: pass a :class:`StreamCache`; each layer keeps its last ``kt - 1`` input
frames there, so feeding a clip one frame at a time gives exactly the outputs of
feeding it whole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class StreamCache:
    """Past conv inputs of every causal layer of one network, for streaming.

    Keys are the layers themselves; values are ``(B, kt - 1, C, H, W)`` tensors.
    A fresh cache means "the next frame is the first frame of the clip".
    """

    def __init__(self) -> None:
        self._past: dict[int, torch.Tensor] = {}

    def get(self, layer: nn.Module) -> torch.Tensor | None:
        return self._past.get(id(layer))

    def put(self, layer: nn.Module, past: torch.Tensor) -> None:
        self._past[id(layer)] = past

    def merge(self, other: StreamCache, worlds: torch.Tensor) -> None:
        """Take batch rows ``worlds`` (N,) long from ``other`` (a cache of N worlds): those worlds
        restart from ``other``'s state while the rest keep theirs. Both caches must be past their first frame."""
        if set(self._past) != set(other._past):
            raise RuntimeError("stream caches of different networks or stages cannot be merged; start all worlds first")
        for key, mine in self._past.items():
            theirs = other._past[key]
            if mine.ndim == 0:  # a 'past the first frame' marker, not per world
                continue
            merged = mine.clone()
            merged[worlds] = theirs
            self._past[key] = merged


class CausalConv3d(nn.Module):
    """Conv over (time, height, width), causal in time, 'same' padding in space.

    Input and output are batch-first video tensors ``(B, T, C, H, W)``. Spatial
    stride is supported (for downsampling); temporal stride is not (temporal
    resampling lives in :mod:`worldsim.models.vae`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int] = (3, 3),
        stride: int = 1,
    ) -> None:
        super().__init__()
        kt, ks = kernel
        if kt < 1 or ks % 2 != 1:
            raise ValueError(f"kernel must be (kt >= 1, odd spatial size), got {kernel}")
        self.kt = kt
        self.in_channels = in_channels
        # Weight layout (out, kt * in, ks, ks): tap i (oldest first) owns input
        # channels [i * in, (i + 1) * in).
        self.conv = nn.Conv2d(in_channels * kt, out_channels, ks, stride=stride, padding=ks // 2)

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, T, C, H, W) -> (B, T, C_out, H / stride, W / stride)."""
        b, t = x.shape[:2]
        if self.kt == 1:
            y = self.conv(rearrange(x, "b t c h w -> (b t) c h w"))
            return rearrange(y, "(b t) c h w -> b t c h w", b=b)
        past = cache.get(self) if cache is not None else None
        if past is None:  # first frame of a clip: pad against itself
            past = x[:, :1].expand(-1, self.kt - 1, -1, -1, -1)
        xp = torch.cat([past, x], dim=1)  # (B, kt - 1 + T, C, H, W)
        if cache is not None:
            cache.put(self, xp[:, -(self.kt - 1):].detach())
        # Stack the kt taps of each output frame along channels: (B, T, kt*C, H, W).
        if t == 1:  # streaming: the padded input already is the one window
            taps = rearrange(xp, "b k c h w -> b 1 (k c) h w")
        else:
            taps = torch.cat([xp[:, i : i + t] for i in range(self.kt)], dim=2)
        y = self.conv(rearrange(taps, "b t c h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b t c h w", b=b)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm applied to each frame on its own, so statistics never mix time steps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C, H, W) -> same shape."""
        b = x.shape[0]
        y = super().forward(rearrange(x, "b t c h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b t c h w", b=b)


def frame_interpolate(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Nearest-neighbour spatial upsampling of every frame. (B, T, C, H, W) -> (B, T, C, sH, sW)."""
    b = x.shape[0]
    y = F.interpolate(rearrange(x, "b t c h w -> (b t) c h w"), scale_factor=scale, mode="nearest")
    return rearrange(y, "(b t) c h w -> b t c h w", b=b)
