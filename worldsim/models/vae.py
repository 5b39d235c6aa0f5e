"""Causal 3D VAE: video frames <-> continuous latents, one latent frame at a time.

Frames are ``(B, T, 3, H, W)`` floats in [-1, 1]; latents are ``(B, T', C, h, w)``
with ``h = H / spatial_factor`` and ``T' = 1 + (T - 1) / temporal_factor``: the
first frame is kept alone, every later latent frame covers ``temporal_factor``
frames. All temporal convolutions are causal (see :mod:`.causal_conv`), so
latent ``j`` depends only on frames up to the last one it covers, and the decoder
can stream: :meth:`CausalVAE.decode` with a :class:`StreamCache` takes one latent
frame per call and gives the same frames as decoding the whole clip at once.

Temporal resampling is time-to-depth: the clip is front-padded with
``temporal_factor - 1`` copies of frame 0, cut into groups of ``temporal_factor``
frames and each group folded into channels (and unfolded again in the decoder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from worldsim.models.causal_conv import CausalConv3d, FrameGroupNorm, StreamCache, frame_interpolate


@dataclass
class VAEConfig:
    """Shape and size of the causal VAE."""

    image_size: int = 64
    """Frame height and width in pixels (frames are square)."""
    latent_channels: int = 8
    """Channels C of each latent frame."""
    spatial_factor: int = 4
    """Downsampling in height and width: 4 or 8."""
    temporal_factor: int = 1
    """Frames per latent frame after the first: 1, 2 or 4. Interactive worlds want 1."""
    encoder_channels: tuple[int, ...] = (32, 64, 64)
    """Width at each resolution, full resolution first; log2(spatial_factor) + 1 entries."""
    decoder_channels: tuple[int, ...] = (16, 32, 64)
    """Decoder width at each resolution, full resolution first (kept narrow: it runs every frame)."""
    blocks: int = 1
    """Residual blocks per resolution, in encoder and decoder."""
    temporal_kernel: int = 3
    """Temporal size of the causal kernels (1 makes the VAE per-frame)."""
    norm_groups: int = 8
    """Groups of the per-frame GroupNorm."""

    def validate(self) -> None:
        levels = int(math.log2(self.spatial_factor)) + 1
        if self.spatial_factor not in (4, 8):
            raise ValueError(f"vae.spatial_factor must be 4 or 8, got {self.spatial_factor}")
        if self.temporal_factor not in (1, 2, 4):
            raise ValueError(f"vae.temporal_factor must be 1, 2 or 4, got {self.temporal_factor}")
        for name in ("encoder_channels", "decoder_channels"):
            chans = getattr(self, name)
            if len(chans) != levels:
                raise ValueError(
                    f"vae.{name} needs {levels} entries for spatial_factor={self.spatial_factor}, got {list(chans)}"
                )
            if any(c % self.norm_groups for c in chans):
                raise ValueError(f"vae.{name} entries must be multiples of norm_groups={self.norm_groups}")
        if self.image_size % self.spatial_factor:
            raise ValueError(f"vae.image_size {self.image_size} is not divisible by {self.spatial_factor}")

    @property
    def latent_size(self) -> int:
        return self.image_size // self.spatial_factor


class ResBlock(nn.Module):
    """Pre-norm residual block: a causal temporal conv, then a spatial conv."""

    def __init__(self, cin: int, cout: int, kt: int, groups: int) -> None:
        super().__init__()
        self.norm1 = FrameGroupNorm(groups, cin)
        self.conv1 = CausalConv3d(cin, cout, (kt, 3))
        self.norm2 = FrameGroupNorm(groups, cout)
        self.conv2 = CausalConv3d(cout, cout, (1, 3))
        self.skip = CausalConv3d(cin, cout, (1, 1)) if cin != cout else None

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, T, cin, H, W) -> (B, T, cout, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.skip is None else self.skip(x)) + h


class TimeToDepth(nn.Module):
    """(B, T, C, H, W) -> (B, T', k*C, H, W), T = 1 + k(T' - 1); frame 0 is its own group."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.shape[1] - 1) % self.k:
            raise ValueError(
                f"a clip for temporal_factor={self.k} needs 1 + {self.k}*n frames, got {x.shape[1]}"
            )
        x = torch.cat([x[:, :1].expand(-1, self.k - 1, -1, -1, -1), x], dim=1)
        return rearrange(x, "b (t k) c h w -> b t (k c) h w", k=self.k)


class DepthToTime(nn.Module):
    """Inverse of :class:`TimeToDepth`: the first latent frame yields one frame, later ones k."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        first = cache is None or cache.get(self) is None
        if cache is not None:
            cache.put(self, x.new_zeros(()))  # marks "past the first latent frame"
        x = rearrange(x, "b t (k c) h w -> b (t k) c h w", k=self.k)
        return x[:, self.k - 1 :] if first else x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, kt, g = cfg.encoder_channels, cfg.temporal_kernel, cfg.norm_groups
        self.conv_in = CausalConv3d(3, ch[0], (kt, 3))
        self.levels = nn.ModuleList()
        self.down = nn.ModuleList()
        prev = ch[0]
        for i, c in enumerate(ch):
            blocks = [ResBlock(prev if j == 0 else c, c, kt, g) for j in range(cfg.blocks)]
            self.levels.append(nn.ModuleList(blocks))
            prev = c if cfg.blocks else prev
            if i < len(ch) - 1:
                self.down.append(CausalConv3d(prev, prev, (1, 3), stride=2))
        k = cfg.temporal_factor
        self.time_down = nn.Sequential(TimeToDepth(k), CausalConv3d(k * prev, prev, (1, 1))) if k > 1 else None
        self.mid = ResBlock(prev, ch[-1], kt, g)
        self.norm_out = FrameGroupNorm(g, ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels, (1, 3))

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, T, 3, H, W) -> posterior moments (B, T', 2C, h, w). With a cache (temporal factor 1 only),
        frames stream in: the same moments as encoding the whole clip at once."""
        if cache is not None and self.time_down is not None:
            raise ValueError("streaming encode needs temporal_factor 1")
        h = self.conv_in(x, cache)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, cache)
            if i < len(self.down):
                h = self.down[i](h)
        if self.time_down is not None:
            h = self.time_down(h)
        h = self.mid(h, cache)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, kt, g = cfg.decoder_channels, cfg.temporal_kernel, cfg.norm_groups
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[-1], (kt, 3))
        self.mid = ResBlock(ch[-1], ch[-1], kt, g)
        k = cfg.temporal_factor
        self.time_up_conv = CausalConv3d(ch[-1], k * ch[-1], (1, 1)) if k > 1 else None
        self.time_up = DepthToTime(k) if k > 1 else None
        self.levels = nn.ModuleList()
        self.up = nn.ModuleList()
        prev = ch[-1]
        for i in reversed(range(len(ch))):
            c = ch[i]
            blocks = [ResBlock(prev if j == 0 else c, c, kt, g) for j in range(cfg.blocks)]
            self.levels.append(nn.ModuleList(blocks))
            prev = c if cfg.blocks else prev
            if i > 0:
                self.up.append(CausalConv3d(prev, ch[i - 1], (1, 3)))
                prev = ch[i - 1]
        self.norm_out = FrameGroupNorm(g, prev)
        self.conv_out = CausalConv3d(prev, 3, (1, 3))

    def forward(self, z: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """z: (B, T', C, h, w) -> frames (B, T, 3, H, W)."""
        h = self.conv_in(z, cache)
        h = self.mid(h, cache)
        if self.time_up is not None:
            h = self.time_up(self.time_up_conv(h), cache)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, cache)
            if i < len(self.up):
                h = self.up[i](frame_interpolate(h, 2))
        return self.conv_out(F.silu(self.norm_out(h)))


class CausalVAE(nn.Module):
    """KL-regularised causal video autoencoder."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode_moments(self, frames: torch.Tensor, cache: StreamCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, 3, H, W) in [-1, 1] -> (mean, logvar), each (B, T', C, h, w). ``cache``: stream a clip
        in pieces (temporal factor 1), a fresh cache per clip."""
        self._check_frames(frames)
        mean, logvar = self.encoder(frames, cache).chunk(2, dim=2)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, frames: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """frames (B, T, 3, H, W) in [-1, 1] -> latents (B, T', C, h, w) (posterior means)."""
        return self.encode_moments(frames, cache)[0]

    def decode(self, latents: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """latents (B, T', C, h, w) -> frames (B, T, 3, H, W), roughly in [-1, 1].

        With a cache, call it once per latent frame (T' = 1) to stream a clip;
        a fresh cache starts a new clip.
        """
        c, s = self.cfg.latent_channels, self.cfg.latent_size
        if latents.ndim != 5 or latents.shape[2:] != (c, s, s):
            raise ValueError(f"latents must be (B, T', {c}, {s}, {s}), got {tuple(latents.shape)}")
        return self.decoder(latents, cache)

    def forward(self, frames: torch.Tensor, sample: bool = True):
        """Training pass. frames (B, T, 3, H, W) -> (reconstruction, mean, logvar)."""
        mean, logvar = self.encode_moments(frames)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        return self.decoder(z), mean, logvar

    def _check_frames(self, frames: torch.Tensor) -> None:
        s = self.cfg.image_size
        if frames.ndim != 5 or frames.shape[2:] != (3, s, s):
            raise ValueError(
                f"frames must be (B, T, 3, {s}, {s}) floats in [-1, 1], got {tuple(frames.shape)}; "
                "convert uint8 (T, H, W, 3) frames with worldsim.frames.to_model"
            )


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean KL(q(z|x) || N(0, I)) per latent element."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


VAE_KIND = "vae"


def save_vae(path, vae: CausalVAE, meta: dict | None = None) -> None:
    """One self-describing file: weights, config and whatever ``meta`` adds (source, latent statistics)."""
    from worldsim.checkpoint import save_checkpoint
    from worldsim.config import to_dict

    save_checkpoint(path, VAE_KIND, {"vae": vae}, dict(meta or {}, config=to_dict(vae.cfg)))


def load_vae(path, device: torch.device | str = "cpu") -> tuple[CausalVAE, dict]:
    """Rebuild a VAE from its file alone; returns (model in eval mode, metadata)."""
    from worldsim.checkpoint import load_module, read_checkpoint
    from worldsim.config import from_dict

    meta, tensors = read_checkpoint(path, VAE_KIND, hint="python train.py stage=vae")
    vae = CausalVAE(from_dict(VAEConfig, meta["config"], "vae config"))
    load_module(vae, tensors, "vae", path)
    return vae.to(device).eval(), meta
