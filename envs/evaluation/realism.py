"""Realism: what a viewer sees, generated clips against the real ones they replay."""

from __future__ import annotations

from typing import Any

import numpy as np

from worldsim.metrics.image import frame_change, sharpness
from worldsim.metrics.two_sample import repeated_accuracy


def realism(real: np.ndarray, gen: np.ndarray, steps: int, seed: int, seeds: int = 1) -> dict[str, Any]:
    """Generated clips (N, T, H, W, 3) against the real ones they replay: sharpness and frame-to-frame change
    as ratios to the real game (1 = the same), and the two-sample classifier's held-out accuracy on single
    frames and on consecutive pairs (0.5 = it cannot tell them apart): the mean over ``seeds`` classifier
    seeds and both halves of the episodes as training set, with its spread and every fit (``*_runs``; the
    first is the single fit that reports before 2026-12-07 gave)."""
    frames_of = real.reshape(-1, *real.shape[2:]), gen.reshape(-1, *gen.shape[2:])
    out: dict[str, Any] = {"sharpness_ratio": sharpness(frames_of[1]) / max(sharpness(frames_of[0]), 1e-9),
                           "frame_change_ratio": frame_change(gen) / max(frame_change(real), 1e-9)}
    for kind, pairs in (("frames", False), ("pairs", True)):
        fits = repeated_accuracy(real, gen, pairs, steps, seed, seeds)
        out[f"classifier_accuracy_{kind}"] = fits["mean"]
        out[f"classifier_accuracy_{kind}_std"] = fits["std"]
        out[f"classifier_accuracy_{kind}_runs"] = fits["runs"]
    return out
