"""An agent at the wheel of ``play.py`` (``--policy agent``): it reads the side it drives, frame by frame.

In a world it reads the world's own latents (``WorldModelEnv.latent``); in the real game it encodes the real
frames through the world's VAE, as in :mod:`envs.agent.evaluation`. It sees by the same rule as in training
(:class:`~envs.agent.view.AgentView`): it chooses every ``action_repeat`` frames and holds the action in
between.
"""

from __future__ import annotations

import numpy as np

from envs.agent.network import Agent
from envs.agent.view import AgentView, RealLatents


class Pilot:
    """``pilot(frame) -> action`` for the game loop; ``env`` is the side it drives."""

    def __init__(self, agent: Agent, env, world) -> None:
        self.agent, self.env = agent, env
        self.world_latent = getattr(env.unwrapped, "latent", None)  # a world side; None for the real game
        self.eyes = None if self.world_latent is not None else RealLatents(world)
        self.view = AgentView(agent.cfg, agent.net.latent_shape)
        self.t, self.action = 0, 0

    def reset(self, env=None) -> None:
        self.t = 0
        if self.eyes is not None:
            self.eyes.reset()

    def _latent(self, frame: np.ndarray) -> np.ndarray:
        if self.world_latent is not None:
            return self.world_latent()
        self.eyes.add(frame)
        return self.eyes.latent()

    def __call__(self, frame: np.ndarray) -> int:
        if not self.view.decides(self.t):
            if self.eyes is not None:
                self.eyes.add(frame)  # every real frame enters the encoder's history
        else:
            z = self._latent(frame)
            if self.t == 0:
                self.view.start(z[None])
            else:
                self.view.push(z[None])
            self.action = int(self.agent.net.act(self.view.obs)[0])
        self.t += 1
        return self.action
