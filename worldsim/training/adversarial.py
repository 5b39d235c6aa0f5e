"""An adversarial term for the VAE's decoder: a small patch critic that tells decoded frames from real ones.

A decoder trained on pixel errors alone draws the mean of what a latent could be, which is blur: grass
texture, kerb stripes and thin limbs come out soft. A critic that judges each patch of a frame, beside the frame before it, as
real or decoded (hinge loss), and a decoder term that pays for fooling it, pushes the decoder towards frames with the
game's own detail. The decoder term is weighted adaptively, as in VQGAN (Esser et al., 2021): its gradient at
the decoder's last layer is scaled to the size of the pixel loss's gradient there, times ``weight``, so one
setting works whatever the loss scales are. No pretrained network is involved (none may be downloaded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def consecutive_pairs(clips: torch.Tensor) -> torch.Tensor:
    """Clips (B, L, 3, H, W) -> each frame beside the one before it, (B * (L - 1), 6, H, W) (a one-frame clip
    beside itself): what the critic judges, so that flicker between frames is as visible to it as blur."""
    if clips.shape[1] == 1:
        return torch.cat([clips, clips], 2).flatten(0, 1)
    return torch.cat([clips[:, :-1], clips[:, 1:]], 2).flatten(0, 1)


class PatchCritic(nn.Module):
    """Consecutive frame pairs (N, 6, H, W) in [-1, 1] (:func:`consecutive_pairs`) -> logits (N, 1, H/8, W/8),
    one per overlapping patch (about 22 px wide at three stride-2 layers): positive means "looks real"."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), groups: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 6
        for i, c in enumerate(channels):
            layers.append(nn.Conv2d(prev, c, 4, stride=2, padding=1))
            if i > 0:
                layers.append(nn.GroupNorm(min(groups, c), c))
            layers.append(nn.LeakyReLU(0.2))
            prev = c
        layers.append(nn.Conv2d(prev, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


def critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the critic: real patches above +1, decoded ones below -1."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def decoder_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The decoder's adversarial term: raise the critic's logits on its frames."""
    return -fake_logits.mean()


def adaptive_weight(pixel_loss: torch.Tensor, adversarial_loss: torch.Tensor, last: torch.Tensor,
                    weight: float, limit: float = 1e4) -> torch.Tensor:
    """``weight`` times |d pixel_loss / d last| / |d adversarial_loss / d last| (``last``: the decoder's last
    weight tensor), detached and clipped to [0, limit]: the adversarial term's pull on the frame is kept in
    proportion to the pixel loss's."""
    g_pix = torch.autograd.grad(pixel_loss, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adversarial_loss, last, retain_graph=True)[0]
    return (weight * g_pix.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, limit).detach()
