"""Atari games through ale-py, with the standard preprocessing (frame skip 4, no-op starts)."""

from __future__ import annotations

import gymnasium as gym

from envs.games.keymaps import Keymap, atari_keymap

FPS = 15.0
"""60 Hz emulator frames, one observation every 4."""


def make(env_id: str, render_mode: str | None, frame_size: int, **kwargs) -> gym.Env:
    try:
        import ale_py
    except ImportError:
        raise ImportError('Atari worlds need ale-py and OpenCV: pip install -e ".[atari]"') from None
    gym.register_envs(ale_py)
    # Frame skipping and no-op starts happen in AtariPreprocessing; the base env
    # must not skip or repeat on its own (sticky actions live in the data policy).
    kwargs.setdefault("repeat_action_probability", 0.0)
    env = gym.make(env_id, frameskip=1, render_mode=render_mode, **kwargs)
    return gym.wrappers.AtariPreprocessing(
        env, noop_max=30, frame_skip=4, screen_size=frame_size, grayscale_obs=False, terminal_on_life_loss=False
    )


def keymap(env: gym.Env, name: str) -> Keymap:
    return atari_keymap(name, env.unwrapped.get_action_meanings())
