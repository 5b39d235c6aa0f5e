"""Temporal consistency: the optical-flow warping error of generated clips against the real ones."""

from __future__ import annotations

from typing import Any

import numpy as np

from worldsim.metrics.image import warp_error


def mean_warp_error(clips: np.ndarray) -> float:
    """Mean warping error over clips (N, T, H, W, 3)."""
    return float(np.mean([warp_error(x) for x in clips]))


def warp_report(generated: float, real: float, reconstructed: float) -> dict[str, Any]:
    """The three warping errors and their ratios to the real game's."""
    return {"generated": generated, "real": real, "ratio": generated / max(real, 1e-9),
            "reconstructed": reconstructed, "reconstructed_ratio": reconstructed / max(real, 1e-9)}
