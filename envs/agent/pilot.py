"""An agent at the wheel of ``play.py`` (``--policy agent``): it reads the side it drives, frame by frame.

In a world it reads the world's own latents; in the real game it encodes the real frames through the
world's VAE, as in :mod:`envs.agent.evaluation`. It chooses every ``action_repeat`` frames and holds the
action in between, as it did in training.
"""

from __future__ import annotations

import numpy as np

from .network import Agent
from .observe import LatentView
from .worlds import push


class Pilot:
    """``pilot(frame) -> action`` for the game loop; ``env`` is the side it drives."""

    def __init__(self, agent: Agent, env, world) -> None:
        self.agent, self.env = agent, env
        self.core = getattr(env.unwrapped, "core", None)  # a world side; None for the real game
        self.view = None if self.core is not None else LatentView(world)
        c = agent.net.latent_shape[0]
        self.c, self.obs = c, np.zeros((1, *agent.net.obs_shape), np.float32)
        self.t, self.action = 0, 0

    def reset(self, env=None) -> None:
        self.t = 0
        if self.view is not None:
            self.view.reset()

    def _latent(self, frame: np.ndarray) -> np.ndarray:
        if self.core is not None:
            return self.core.latents()[0]
        self.view.add(frame)
        return self.view.latent()

    def __call__(self, frame: np.ndarray) -> int:
        if self.view is not None and self.t % self.agent.cfg.action_repeat:
            self.view.add(frame)  # every real frame enters the encoder's history
        if self.t % self.agent.cfg.action_repeat == 0:
            z = self._latent(frame)
            if self.t == 0:
                self.obs[0] = np.tile(z, (self.agent.cfg.stack, 1, 1))
            else:
                push(self.obs, z[None], self.c)
            self.action = int(self.agent.net.act(self.obs)[0])
        self.t += 1
        return self.action
