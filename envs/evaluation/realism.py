"""Realism: what a viewer sees, generated clips against the real ones they replay."""

from __future__ import annotations

import numpy as np

from worldsim.metrics.image import frame_change, sharpness
from worldsim.metrics.two_sample import two_sample_accuracy


def realism(real: np.ndarray, gen: np.ndarray, steps: int, seed: int) -> dict[str, float]:
    """Generated clips (N, T, H, W, 3) against the real ones they replay: sharpness and frame-to-frame change
    as ratios to the real game (1 = the same), and the two-sample classifier's held-out accuracy on single
    frames and on consecutive pairs (0.5 = it cannot tell them apart)."""
    frames_of = real.reshape(-1, *real.shape[2:]), gen.reshape(-1, *gen.shape[2:])
    return {"sharpness_ratio": sharpness(frames_of[1]) / max(sharpness(frames_of[0]), 1e-9),
            "frame_change_ratio": frame_change(gen) / max(frame_change(real), 1e-9),
            "classifier_accuracy_frames": two_sample_accuracy(real, gen, False, steps, seed=seed),
            "classifier_accuracy_pairs": two_sample_accuracy(real, gen, True, steps, seed=seed)}
