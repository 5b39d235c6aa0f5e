"""How frames are sampled at inference (:class:`SamplerConfig`), and every rule on its settings.

One place for the limits (sampling steps 1..8, a window no longer than the trained one, finite numbers) and
for the way a caller's options change a world's stored sampler (:meth:`SamplerConfig.override`): the env,
the evaluation, the benchmark, play.py's live keys and retune all go through here.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

MIN_STEPS, MAX_STEPS = 1, 8
"""Euler steps per frame a sampler may take."""


def check_steps(steps, name: str = "sampler steps") -> int:
    """A whole number of sampling steps in MIN_STEPS..MAX_STEPS, else a ValueError naming ``name``."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not MIN_STEPS <= steps <= MAX_STEPS:
        raise ValueError(f"{name} must be a whole number {MIN_STEPS}..{MAX_STEPS}, got {steps!r}")
    return int(steps)


def clamp_steps(steps: int) -> int:
    """The nearest allowed number of sampling steps (play.py's live keys step through them)."""
    return min(MAX_STEPS, max(MIN_STEPS, int(steps)))


def check_window(window, trained: int | None = None, name: str = "sampler window") -> int | None:
    """None (the trained window) or a whole number >= 1, at most ``trained`` frames when that is given."""
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"{name} must be a whole number >= 1 or None, got {window!r}")
    if trained is not None and window > trained:
        raise ValueError(f"{name} {window} is longer than the {trained} frames this world was trained on")
    return window


@dataclass
class SamplerConfig:
    """How frames are sampled at inference. The defaults are the shipped CarRacing world's, chosen by
    measurement (checkpoints/README.md): each frame starts from the previous one noised to ``start_level``;
    one Euler step matched 2 and 4 within 0.3 dB; start level 0.8 over 0.5 gave +1.4 dB at 16 frames and 2.2x
    the key response, 1.0 was worse."""

    steps: int = 1
    """Euler steps per frame (1-8)."""
    guidance: float = 1.0
    """Action guidance scale; 1 disables it (and the null-action variant it adds to every sampling call)."""
    context_level: float = 0.2
    """Noise level at which finished frames enter the cache."""
    shift: float = 1.0
    """Timestep shift (> 1 spends more steps at high noise)."""
    start_level: float = 0.8
    """Level each frame's sampling starts from: 1 = pure noise; below 1 the previous frame's latent,
    noised to that level, is the starting point (consecutive frames are nearly alike)."""

    window: int | None = None
    """Frames a new frame attends to, itself included; None = the window the DiT was trained with. A shorter
    one is cheaper (attention is most of a batched step) and stays in the training distribution: the
    first frames of every training clip see fewer past frames."""

    def __post_init__(self) -> None:
        check_window(self.window)
        check_steps(self.steps)
        for name in ("guidance", "context_level", "shift", "start_level"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"sampler {name} must be a finite number, got {v!r}")
        if not 0 < self.start_level <= 1:
            raise ValueError(f"sampler start_level must be in (0, 1] (1: pure noise), got {self.start_level}")
        if not 0 <= self.context_level < 1:
            raise ValueError(f"sampler context_level must be in [0, 1), got {self.context_level}")
        if self.shift <= 0:
            raise ValueError(f"sampler shift must be above 0, got {self.shift}")

    def override(self, **changes) -> SamplerConfig:
        """A copy with the given fields changed; a None leaves its field as it is (an option left unset).
        Every caller's options come through here, so the checks of :meth:`__post_init__` apply to them."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def fit(self, trained_window: int) -> int:
        """The frames a new frame attends to in a world trained on ``trained_window``: the window, checked."""
        return check_window(self.window, trained_window) or trained_window
