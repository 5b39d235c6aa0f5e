"""The real game as an agent trained in a world sees it: real frames, resized as the world's data was,
encoded by that world's VAE into the same normalised latents (:class:`~envs.agent.view.RealLatents`), stacked
by the one observation rule (:class:`~envs.agent.view.AgentView`), one decision every ``action_repeat``
frames (:class:`RealAgentEnv`, a Gymnasium env).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.agent.network import AgentConfig
from envs.agent.view import AgentView, RealLatents
from envs.games.source import source_game
from worldsim.world import World


class RealAgentEnv(gym.Env):
    """The world's real env behind an agent's eyes: observations (S*C, h, w) as in
    :class:`~envs.agent.in_world.AgentWorlds`, each action held for ``action_repeat`` frames (real rewards
    summed), the real game's own episode ends."""

    metadata = {"render_modes": []}

    def __init__(self, world: World, cfg: AgentConfig, max_frames: int | None = None, observe: bool = True) -> None:
        """``observe=False`` skips the encoder (observations stay zero): for policies that do not look."""
        source = dict(world.source)
        if max_frames is not None:
            source["max_episode_steps"] = int(max_frames)
        self.env = source_game(source).make_env()
        self.cfg, self.eyes, self.observe = cfg, RealLatents(world), observe
        c = world.vae.cfg.latent_channels
        s = world.dit.cfg.latent_size
        self.latent_shape = (c, s, s)
        self.view = AgentView(cfg, self.latent_shape)
        self.observation_space = self.view.space
        self.action_space = self.env.action_space
        self.frame: np.ndarray | None = None
        self.record = False
        """When True, every frame of the episode, its action and reward are kept in ``trace``."""
        self.trace: dict[str, list] = {"frames": [], "actions": [], "rewards": []}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        frame, info = self.env.reset(seed=seed, options=options)
        self.trace = {"frames": [frame], "actions": [0], "rewards": [0.0]} if self.record else self.trace
        self.eyes.reset()
        self.frame = frame
        if self.observe:
            self.eyes.add(frame)
            self.view.start(self.eyes.latent()[None])
        return self.view.obs[0].copy(), info

    def step(self, action):
        total, terminated, truncated, info = 0.0, False, False, {}
        for _ in range(self.cfg.action_repeat):
            frame, reward, terminated, truncated, info = self.env.step(action)
            if self.record:
                self.trace["frames"].append(frame)
                self.trace["actions"].append(int(action))
                self.trace["rewards"].append(float(reward))
            if self.observe:
                self.eyes.add(frame)
            self.frame = frame
            total += float(reward)
            if terminated or truncated:
                break
        if self.observe:
            self.view.push(self.eyes.latent()[None])
        return self.view.obs[0].copy(), total, terminated, truncated, info

    def close(self) -> None:
        self.env.close()
