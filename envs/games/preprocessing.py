"""Turn any Gymnasium env into one whose observations are square uint8 RGB frames."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from worldsim.frames import resize_frames


def is_rgb_image_space(space: spaces.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[-1] == 3
    )


class FrameObservation(gym.Wrapper):
    """Observations become uint8 ``(size, size, 3)`` frames.

    If the wrapped env observes RGB images they are resized; otherwise the env
    must have been made with ``render_mode="rgb_array"`` and its rendering is the
    observation (the original observation moves to ``info["state"]``).
    """

    def __init__(self, env: gym.Env, size: int = 64) -> None:
        super().__init__(env)
        self.size = size
        self.from_render = not is_rgb_image_space(env.observation_space)
        if self.from_render and env.render_mode != "rgb_array":
            raise ValueError(
                f"{env.spec.id if env.spec else env}: observations are not RGB images, so frames come from "
                "render(); make the env with render_mode='rgb_array'"
            )
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)

    def _frame(self, obs) -> np.ndarray:
        img = self.env.render() if self.from_render else obs
        return resize_frames(np.asarray(img, dtype=np.uint8), self.size)[0]

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if self.from_render:
            info = dict(info, state=obs)
        return self._frame(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.from_render:
            info = dict(info, state=obs)
        return self._frame(obs), reward, terminated, truncated, info
