"""CarRacing's road read from 64x64 frames, and a scripted excursion off it and back (track memory)."""

from __future__ import annotations

import numpy as np

from envs.games.carracing import GAS, LEFT, RIGHT


def road_mask(frames: np.ndarray) -> np.ndarray:
    """CarRacing's road pixels: grey (R = G = B within 12) between 70 and 150 (the HUD bar is black, grass green).
    uint8 (..., H, W, 3) -> bool (..., H, W)."""
    f = frames.astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return (np.abs(r - g) < 12) & (np.abs(g - b) < 12) & (g > 70) & (g < 150)


def road_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of the road masks of two clips (..., H, W, 3) -> (...)."""
    ma, mb = road_mask(a), road_mask(b)
    inter, union = (ma & mb).sum((-2, -1)), (ma | mb).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def excursion() -> np.ndarray:
    """Keys that take the car off the road to one side and back across it (CarRacing's discrete actions)."""
    return np.array([GAS] * 8 + [LEFT] * 10 + [GAS] * 12 + [RIGHT] * 20 + [GAS] * 12 + [LEFT] * 10 + [GAS] * 8)
