"""The real game as an agent trained in a world sees it: real frames, resized as the world's data was,
encoded by that world's VAE into the same normalised latents, stacked, one decision every
``action_repeat`` frames (:class:`RealAgentEnv`, a Gymnasium env).

The VAE is causal in time, so a latent depends on the frames just before it: the frames stream through the
encoder with a cache of its past inputs, which gives exactly the latents of a whole episode encoded at
once — what the world was trained to generate.
"""

from __future__ import annotations

import zlib
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from worldsim.integrity import checksums_of
from worldsim.models.causal_conv import StreamCache
from worldsim.training.dynamics_trainer import LatentEncoder
from worldsim.world import World

from ..source import source_world
from .network import AgentConfig
from .worlds import push, stacked_space


def world_vae_id(world: World) -> str:
    """Names the VAE (weights and latent statistics) whose latents an agent reads."""
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in world.vae.state_dict().items()}
    tensors["latent_mean"], tensors["latent_std"] = world.latent_mean.float(), world.latent_std.float()
    return f"{zlib.crc32(checksums_of(tensors).encode()):08x}"


class LatentView:
    """uint8 frames of one episode, one at a time -> the world's normalised latent of each: float32 (C, h, w).
    The encoder streams (a cache of its causal convs' past inputs): one frame's work per frame, the same
    latents as encoding the episode whole."""

    def __init__(self, world: World) -> None:
        meta = {"latent_mean": world.latent_mean.tolist(), "latent_std": world.latent_std.tolist()}
        self.encode = LatentEncoder(world.vae, meta, world.device)
        self.cache = StreamCache()
        self.last: np.ndarray | None = None

    def reset(self) -> None:
        self.cache, self.last = StreamCache(), None

    @torch.no_grad()
    def add(self, frame: np.ndarray) -> None:
        z = self.encode(torch.from_numpy(np.asarray(frame)[None, None]), self.cache)
        self.last = z[0, -1].float().cpu().numpy()

    def latent(self) -> np.ndarray:
        if self.last is None:
            raise RuntimeError("no frame seen yet: add() one first")
        return self.last


class RealAgentEnv(gym.Env):
    """The world's real env behind an agent's eyes: observations (S*C, h, w) as in :class:`AgentWorlds`, each
    action held for ``action_repeat`` frames (real rewards summed), the real game's own episode ends."""

    metadata = {"render_modes": []}

    def __init__(self, world: World, cfg: AgentConfig, max_frames: int | None = None, observe: bool = True) -> None:
        """``observe=False`` skips the encoder (observations stay zero): for policies that do not look."""
        source = dict(world.source)
        if max_frames is not None:
            source["max_episode_steps"] = int(max_frames)
        self.env = source_world(source).make_env()
        self.cfg, self.view, self.observe = cfg, LatentView(world), observe
        c = world.vae.cfg.latent_channels
        s = world.dit.cfg.latent_size
        self.latent_shape, self.c = (c, s, s), c
        self.observation_space = stacked_space(self.latent_shape, cfg.stack)
        self.action_space = self.env.action_space
        self.obs = np.zeros((1, *self.observation_space.shape), np.float32)
        self.frame: np.ndarray | None = None
        self.record = False
        """When True, every frame of the episode, its action and reward are kept in ``trace``."""
        self.trace: dict[str, list] = {"frames": [], "actions": [], "rewards": []}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        frame, info = self.env.reset(seed=seed, options=options)
        self.trace = {"frames": [frame], "actions": [0], "rewards": [0.0]} if self.record else self.trace
        self.view.reset()
        self.frame = frame
        if self.observe:
            self.view.add(frame)
            self.obs[0] = np.tile(self.view.latent(), (self.cfg.stack, 1, 1))
        return self.obs[0].copy(), info

    def step(self, action):
        total, terminated, truncated, info = 0.0, False, False, {}
        for _ in range(self.cfg.action_repeat):
            frame, reward, terminated, truncated, info = self.env.step(action)
            if self.record:
                self.trace["frames"].append(frame)
                self.trace["actions"].append(int(action))
                self.trace["rewards"].append(float(reward))
            if self.observe:
                self.view.add(frame)
            self.frame = frame
            total += float(reward)
            if terminated or truncated:
                break
        if self.observe:
            push(self.obs, self.view.latent()[None], self.c)
        return self.obs[0].copy(), total, terminated, truncated, info

    def close(self) -> None:
        self.env.close()
