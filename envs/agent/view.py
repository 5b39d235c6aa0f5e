"""What an agent sees: the one observation rule, used in a world (:class:`~envs.agent.in_world.AgentWorlds`),
in the real game (:class:`~envs.agent.in_game.RealAgentEnv`) and at the wheel of play.py
(:class:`~envs.agent.pilot.Pilot`).

An observation is the normalised latent frames of the agent's last ``stack`` decisions, newest first on the
channel axis: float32 (stack * C, h, w). On a (re)start the first latent fills every slot; after that each
decision, one every ``action_repeat`` frames, pushes the latest latent in. In a world the latents are the
generated ones; in the real game the real frames streamed through the world's VAE (:class:`RealLatents`),
which gives exactly the latents the world was trained to generate.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from envs.agent.network import AgentConfig
from worldsim.engine.latent_space import LatentEncoder
from worldsim.models.causal_conv import StreamCache
from worldsim.world import World


def stacked_space(latent_shape: tuple[int, int, int], stack: int) -> spaces.Box:
    """One agent's observation space: (stack * C, h, w) float32."""
    c, h, w = latent_shape
    return spaces.Box(-np.inf, np.inf, (stack * c, h, w), np.float32)


class AgentView:
    """The stacked observations of ``n`` agents: ``obs`` float32 (n, S*C, h, w)."""

    def __init__(self, cfg: AgentConfig, latent_shape: tuple[int, int, int], n: int = 1) -> None:
        self.cfg, self.c = cfg, int(latent_shape[0])
        self.space = stacked_space(tuple(latent_shape), cfg.stack)
        self.obs = np.zeros((n, *self.space.shape), np.float32)

    def decides(self, frame: int) -> bool:
        """Whether the agent chooses a new action at this frame of its episode (0, action_repeat, ...)."""
        return frame % self.cfg.action_repeat == 0

    def start(self, latents: np.ndarray, which: np.ndarray | None = None) -> None:
        """(Re)start agents ``which`` (indices; None = all) from their first latents (k, C, h, w): every
        slot holds it."""
        idx = slice(None) if which is None else which
        self.obs[idx] = np.tile(latents, (1, self.cfg.stack, 1, 1))

    def push(self, latents: np.ndarray) -> None:
        """One decision for all agents: the newest latents (n, C, h, w) come first, the oldest drop out."""
        c = self.c
        self.obs[:, c:] = self.obs[:, :-c].copy()
        self.obs[:, :c] = latents


def world_vae_id(world: World) -> str:
    """Names the latents an agent reads: the world's encoder and latent statistics (:meth:`World.latent_id`)."""
    return world.latent_id()


def sees_through(agent_world: dict, world: World) -> bool:
    """Whether an agent that learned in ``agent_world`` (the world record its file holds) reads ``world``'s
    latents: the same encoder and statistics, whatever decoder draws the frames."""
    return agent_world.get("vae_id") in world.latent_ids()


def agent_world_mismatch(agent_world: dict, world: World) -> str | None:
    """Why an agent (``agent_world``: the world its file names) cannot drive ``world``, or None when it can:
    it must see through the same VAE (which also means the same game and frame size)."""
    vid = world_vae_id(world)
    if sees_through(agent_world, world):
        return None
    game = agent_world.get("source", {}).get("env_id") or agent_world.get("name")
    return (f"the agent learned in {agent_world.get('name')!r} ({game}, VAE {agent_world.get('vae_id')}) and cannot "
            f"drive {world.name!r} ({world.source.get('env_id')}, VAE {vid}): give an agent trained in this world")


class RealLatents:
    """uint8 frames of one real episode, one at a time -> the world's normalised latent of each: float32
    (C, h, w). The encoder streams (a cache of its causal convs' past inputs): one frame's work per frame,
    the same latents as encoding the episode whole."""

    def __init__(self, world: World) -> None:
        self.encode: LatentEncoder = world.latent_encoder()
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
