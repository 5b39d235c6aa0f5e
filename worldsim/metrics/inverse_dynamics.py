"""Inverse dynamics: which action led from frame t-1 to frame t? A small CNN trained on real transitions.

Its accuracy on *generated* transitions, next to its accuracy on real ones, measures
whether a world model's frames show the actions' effects (action controllability).
Discrete action spaces only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldsim.frames import to_model


class InverseDynamics(nn.Module):
    """Two consecutive frames (B, 2, 3, H, W) -> action logits (B, n)."""

    def __init__(self, n_actions: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(9, w, 4, 2, 1), nn.SiLU(),  # frame t-1, frame t, and their difference
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, n_actions),
        )

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        a, b = pairs[:, 0], pairs[:, 1]
        return self.net(torch.cat([a, b, b - a], dim=1))


def transitions(frames: np.ndarray, actions: np.ndarray, start: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive pairs of one episode: (T-start, 2, H, W, 3) uint8 and the actions that led to the second frames."""
    idx = np.arange(max(1, start), len(frames))
    return np.stack([frames[idx - 1], frames[idx]], 1), actions[idx]


def train_inverse_dynamics(
    pairs: np.ndarray, actions: np.ndarray, n_actions: int, steps: int = 400, batch: int = 64, lr: float = 2e-3,
    seed: int = 0, device: str | torch.device = "cpu",
) -> InverseDynamics:
    """Fit on uint8 pairs (N, 2, H, W, 3) with actions (N,), class-balanced sampling."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = InverseDynamics(n_actions).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    counts = np.bincount(actions, minlength=n_actions).astype(np.float64)
    weights = 1.0 / np.maximum(counts[actions], 1.0)
    weights /= weights.sum()
    for step in range(steps):
        i = rng.choice(len(pairs), batch, p=weights)
        x = to_model(pairs[i], device)
        loss = F.cross_entropy(model(x), torch.as_tensor(actions[i], device=device).long())
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: InverseDynamics, pairs: np.ndarray, actions: np.ndarray, balanced: bool = True) -> float:
    """Accuracy on uint8 pairs; ``balanced`` averages the per-action accuracies (actions are imbalanced)."""
    dev = next(model.parameters()).device
    pred = np.concatenate([model(to_model(pairs[i : i + 256], dev)).argmax(1).cpu().numpy()
                           for i in range(0, len(pairs), 256)])
    hit = pred == actions
    if not balanced:
        return float(hit.mean())
    return float(np.mean([hit[actions == a].mean() for a in np.unique(actions)]))
