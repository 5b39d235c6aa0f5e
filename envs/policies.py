"""Data policies that are not tied to one game."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


class RandomPolicy:
    """Uniform random actions; with ``repeat_prob`` the previous action is kept (sticky actions)."""

    def __init__(self, space: spaces.Space, rng: np.random.Generator, repeat_prob: float = 0.0) -> None:
        self.space = space
        self.rng = rng
        self.repeat_prob = repeat_prob
        self.space.seed(int(rng.integers(2**31)))
        self.last = None

    def reset(self, env) -> None:
        self.last = None

    def __call__(self, obs) -> np.ndarray:
        if self.last is None or self.rng.random() >= self.repeat_prob:
            self.last = self.space.sample()
        return self.last
