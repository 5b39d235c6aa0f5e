"""Any Gymnasium id: RGB observations, or the rgb_array rendering of the env."""

from __future__ import annotations

import gymnasium as gym
from gymnasium import spaces

from envs.games.keymaps import Keymap, number_keymap
from envs.games.preprocessing import is_rgb_image_space


def make(env_id: str, render_mode: str | None, **kwargs) -> gym.Env:
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as e:
        raise ValueError(f"cannot make Gymnasium env {env_id!r}: {e}") from None
    if is_rgb_image_space(env.observation_space) and render_mode is None:
        return env
    env.close()
    # Observations are not images: the frames are what the env renders.
    return gym.make(env_id, render_mode="rgb_array", **kwargs)


def keymap(env: gym.Env, name: str) -> Keymap:
    space = env.action_space
    if isinstance(space, spaces.Discrete):
        return number_keymap(name, int(space.n))
    return Keymap(name, [], default=None)  # continuous or multi-discrete: no keyboard play
