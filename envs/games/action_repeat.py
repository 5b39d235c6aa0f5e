"""A world recorded at a frame skip: every step of the env holds one action for ``skip`` frames of the real game.

The world then steps ``skip`` game frames per network call, which is what agents want (CarRacing agents
usually repeat each action for a few frames) and what makes a batched world faster than the game in game
time. Rewards of the held frames are summed, the observation is the last frame, and a frame that ends the
episode ends the step early.
"""

from __future__ import annotations

import gymnasium as gym


class ActionRepeat(gym.Wrapper):
    def __init__(self, env: gym.Env, skip: int) -> None:
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 1:
            raise ValueError(f"frame skip must be a whole number >= 1, got {skip!r}")
        super().__init__(env)
        self.skip = skip

    def step(self, action):
        total = 0.0
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info
