"""Classifier two-sample test: can a small CNN tell generated frames from real ones?

Train it on the frames of some episodes (real = 1, generated = 0, balanced) and score it on the frames of
other episodes: an accuracy of 0.5 means the two are indistinguishable to it, 1.0 that every frame gives
itself away. ``pairs=True`` shows it two consecutive frames (and their difference), so motion that looks
wrong (shimmer, frozen or jumping frames) counts too, not only the look of single frames.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldsim.frames import to_model


class RealOrGenerated(nn.Module):
    """uint8-derived frames (B, K, 3, H, W) in [-1, 1] -> logit (B,) that they are real."""

    def __init__(self, frames: int = 1, width: int = 32) -> None:
        super().__init__()
        c, w = 3 * frames + (3 if frames == 2 else 0), width
        self.net = nn.Sequential(
            nn.Conv2d(c, w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 2:
            x = torch.cat([x, x[:, 1:] - x[:, :1]], 1)
        return self.net(x.flatten(1, 2))[:, 0]


def samples(clips: np.ndarray, pairs: bool) -> np.ndarray:
    """Clips (N, T, H, W, 3) -> samples (M, K, H, W, 3): every frame (K = 1) or every consecutive pair (K = 2)."""
    if not pairs:
        return clips.reshape(-1, 1, *clips.shape[2:])
    return np.stack([clips[:, :-1], clips[:, 1:]], 2).reshape(-1, 2, *clips.shape[2:])


def two_sample_accuracy(real: np.ndarray, generated: np.ndarray, pairs: bool = False, steps: int = 300,
                        batch: int = 64, lr: float = 2e-3, seed: int = 0, device: str | torch.device = "cpu",
                        fold: int = 0) -> float:
    """Held-out accuracy of a classifier trained to tell ``real`` from ``generated`` clips, both uint8
    (N, T, H, W, 3), clip i of each from the same episode. ``fold`` 0: clips of even index train it, odd ones
    score it (held-out episodes); 1: the other way round. The score is balanced over the two classes.
    Needs N >= 2."""
    if len(real) < 2 or len(generated) < 2:
        raise ValueError("the two-sample test needs at least 2 clips of each kind (one to train on, one to score)")
    if fold not in (0, 1):
        raise ValueError(f"fold must be 0 or 1, got {fold}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = [samples(x[fold::2], pairs) for x in (real, generated)]
    test = [samples(x[1 - fold::2], pairs) for x in (real, generated)]
    model = RealOrGenerated(2 if pairs else 1).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    for step in range(steps):
        i, j = rng.integers(len(train[0]), size=batch // 2), rng.integers(len(train[1]), size=batch // 2)
        x = to_model(np.concatenate([train[0][i], train[1][j]]), device)
        y = torch.cat([torch.ones(batch // 2), torch.zeros(batch // 2)]).to(device)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        hits = []
        for label, x in ((1, test[0]), (0, test[1])):
            logits = torch.cat([model(to_model(x[k:k + 256], device)) for k in range(0, len(x), 256)])
            hits.append(float(((logits > 0).long() == label).float().mean()))
    return float(np.mean(hits))


def repeated_accuracy(real: np.ndarray, generated: np.ndarray, pairs: bool, steps: int, seed: int,
                      seeds: int) -> dict[str, float | list[float]]:
    """:func:`two_sample_accuracy` over ``seeds`` classifier seeds (``seed``, ``seed + 1``, ...) and both folds,
    so every episode is scored once per seed: {"mean", "std", "runs"} with runs ordered seed by seed, fold 0
    before fold 1 (runs[0] is the single fit of ``two_sample_accuracy(..., seed=seed)``). On 8 held-out episodes
    a single fit swung 0.65-0.94 with its seed on one world; the mean is what a measurement should quote."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    runs = [two_sample_accuracy(real, generated, pairs, steps, seed=seed + k, fold=f)
            for k in range(seeds) for f in (0, 1)]
    return {"mean": float(np.mean(runs)), "std": float(np.std(runs)), "runs": [round(r, 4) for r in runs]}
