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


class ScriptedPolicy:
    """A fixed, repeating drive through a keymap: each bound action held for ``hold`` frames, with the
    default action (e.g. gas for CarRacing's up key) in between. Shows every key's effect in a video."""

    def __init__(self, actions: list, hold: int = 12, default=0, between: int = 12) -> None:
        self.plan = []
        for a in actions:
            self.plan += [default] * between + [a] * hold
        self.plan = self.plan or [default]
        self.t = 0

    def reset(self, env=None) -> None:
        self.t = 0

    def __call__(self, obs):
        a = self.plan[self.t % len(self.plan)]
        self.t += 1
        return a
