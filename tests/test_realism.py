"""Realism measures: sharpness, frame-to-frame change and the classifier two-sample test."""

import numpy as np
import pytest

from envs.evaluation.evaluate import EvalConfig, evaluate_world
from envs.evaluation.realism import realism
from worldsim.metrics.image import frame_change, sharpness
from worldsim.metrics.two_sample import repeated_accuracy, two_sample_accuracy


def scenes(n, t=8, seed=0):
    """Clips of a toy game: a grey road band and a red car on green grass, drifting a pixel per frame."""
    rng = np.random.default_rng(seed)
    clips = np.zeros((n, t, 32, 32, 3), np.uint8)
    for i in range(n):
        x0, car = int(rng.integers(4, 20)), int(rng.integers(8, 24))
        for k in range(t):
            f = clips[i, k]
            f[:] = (90, 200, 90)
            f[:, (x0 + k) % 24 : (x0 + k) % 24 + 8] = (105, 105, 105)
            f[car : car + 3, 14:17] = (200, 0, 0)
            f += rng.integers(0, 6, f.shape, dtype=np.uint8)  # a little texture
    return clips


def test_sharpness_and_frame_change():
    real = scenes(4)
    r = real.astype(np.int32)
    blurred = ((r[:, :, :-1, :-1] + r[:, :, 1:, :-1] + r[:, :, :-1, 1:] + r[:, :, 1:, 1:]) // 4).astype(np.uint8)
    assert sharpness(blurred.reshape(-1, 31, 31, 3)) < 0.5 * sharpness(real.reshape(-1, 32, 32, 3))  # a soft world
    frozen = np.repeat(real[:, :1], 8, axis=1)
    shimmer = np.clip(real.astype(np.int32) + np.random.default_rng(1).integers(-20, 20, real.shape), 0, 255)
    assert frame_change(frozen) == 0 and frame_change(shimmer.astype(np.uint8)) > 2 * frame_change(real)


@pytest.mark.slow
def test_two_sample_test_tells_noise_and_not_real_from_real():
    real, other_real = scenes(8, seed=0), scenes(8, seed=1)
    noise = np.random.default_rng(2).integers(0, 256, real.shape, dtype=np.uint8)
    assert two_sample_accuracy(real, noise, steps=150) > 0.95
    assert abs(two_sample_accuracy(real, other_real, steps=150) - 0.5) < 0.15
    frozen = np.repeat(real[:, :1], 8, axis=1)  # single frames are real; only the motion is wrong
    assert two_sample_accuracy(real, frozen, pairs=True, steps=300) > 0.8


def test_repeated_classifier_scores_every_episode_and_keeps_the_single_fit():
    real = scenes(4, t=4, seed=0)
    noise = np.random.default_rng(3).integers(0, 256, real.shape, dtype=np.uint8)
    fits = repeated_accuracy(real, noise, False, steps=20, seed=5, seeds=2)
    assert len(fits["runs"]) == 4  # two seeds, each with either half of the episodes training
    assert fits["runs"][0] == round(two_sample_accuracy(real, noise, steps=20, seed=5), 4)
    assert fits["runs"][1] == round(two_sample_accuracy(real, noise, steps=20, seed=5, fold=1), 4)
    assert fits["mean"] == pytest.approx(np.mean(fits["runs"]), abs=1e-3)
    looks = realism(real, noise, steps=20, seed=5, seeds=1)
    assert looks["classifier_accuracy_frames"] == pytest.approx(np.mean(looks["classifier_accuracy_frames_runs"]),
                                                                abs=1e-3)
    assert len(looks["classifier_accuracy_pairs_runs"]) == 2
    with pytest.raises(ValueError, match="fold"):
        two_sample_accuracy(real, noise, fold=2)
    with pytest.raises(ValueError, match="seeds"):
        repeated_accuracy(real, noise, False, 20, 0, seeds=0)
    with pytest.raises(ValueError, match="realism_seeds"):  # refused before any world is loaded or played
        evaluate_world("no-such-world.safetensors", EvalConfig(realism_seeds=0))
