"""The agent: a small actor-critic over stacked latent frames, and its self-describing file.

An agent observes what a world's VAE makes of the screen: the normalised latent frames (C, h, w) of its
last ``stack`` decisions, stacked on the channel axis -> (stack * C, h, w). In a world these are the
generated latents; in the real game the real frames, resized as the world's data was and encoded by the
same VAE (:mod:`envs.agent.in_game`). It acts every ``action_repeat`` frames.

The file (kind ``agent``) holds the network, its config, the action space and the world it was trained
in (name and VAE id: the real game must be seen through that VAE). Loading is strict and needs no RL
library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from worldsim.checkpoint import CheckpointError, check_fits, load_module, read_checkpoint, save_checkpoint
from worldsim.config import from_dict, to_dict

AGENT_KIND = "agent"
TRAIN_HINT = "python train.py world=NAME stage=agent"


@dataclass
class AgentConfig:
    """What an agent sees and how big it is."""

    stack: int = 2
    """Latent frames stacked per observation: this decision's and the previous ones' (motion)."""
    action_repeat: int = 4
    """Frames each chosen action is held for (CarRacing agents usually act every few frames)."""
    channels: tuple[int, ...] = (32, 64, 64)
    """Conv widths; the first keeps the latent resolution, each later one halves it."""
    hidden: int = 256
    """Width of the features both heads read."""

    def validate(self) -> None:
        if self.stack < 1 or self.action_repeat < 1 or self.hidden < 1 or not self.channels:
            raise ValueError(f"agent stack, action_repeat and hidden must be >= 1 and channels non-empty, got {self}")


class Trunk(nn.Module):
    """Stacked latents (B, S*C, h, w) -> features (B, hidden)."""

    def __init__(self, cfg: AgentConfig, in_channels: int, size: int) -> None:
        super().__init__()
        layers, c = [], in_channels
        for i, width in enumerate(cfg.channels):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(c, width, 3, stride, 1), nn.ReLU()]
            c, size = width, size if stride == 1 else (size + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.Linear(c * size * size, cfg.hidden), nn.ReLU())
        self.features_dim = cfg.hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.out(rearrange(self.convs(obs), "b c h w -> b (c h w)"))


class AgentNet(nn.Module):
    """The whole agent: trunk, policy logits and value (the layout of the RL library's actor-critic with
    no extra layers, so its weights move over one to one)."""

    def __init__(self, cfg: AgentConfig, latent_shape: tuple[int, int, int], n_actions: int) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.latent_shape, self.n_actions = cfg, tuple(latent_shape), n_actions
        c, h, _ = latent_shape
        self.trunk = Trunk(cfg, cfg.stack * c, h)
        self.action_net = nn.Linear(cfg.hidden, n_actions)
        self.value_net = nn.Linear(cfg.hidden, 1)

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        c, h, w = self.latent_shape
        return (self.cfg.stack * c, h, w)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, S*C, h, w) -> action logits (B, n), values (B,)."""
        f = self.trunk(obs)
        return self.action_net(f), self.value_net(f)[:, 0]

    @torch.no_grad()
    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """obs float32 (B, S*C, h, w) -> actions int64 (B,): the most likely ones, or sampled with ``rng``."""
        logits, _ = self(torch.as_tensor(obs, dtype=torch.float32, device=next(self.parameters()).device))
        if rng is None:
            return logits.argmax(-1).cpu().numpy()
        p = torch.softmax(logits.double(), -1).cpu().numpy()
        return np.array([rng.choice(len(q), p=q / q.sum()) for q in p])


def save_agent(path: str | Path, net: AgentNet, *, world: dict[str, Any], action_space: dict[str, Any],
               meta: dict[str, Any] | None = None) -> Path:
    """Write an agent file atomically. ``world``: the world it learned in (``name``, ``vae_id``, ``source``)."""
    info = dict(meta or {})
    info.update(config=to_dict(net.cfg), latent_shape=list(net.latent_shape), action_space=action_space, world=world,
                observation="latents")
    return save_checkpoint(path, AGENT_KIND, {"agent": net}, info)


@dataclass
class Agent:
    net: AgentNet
    world: dict[str, Any]
    """``name``, ``vae_id`` and ``source`` of the world it learned in."""
    action_space: dict[str, Any]
    meta: dict[str, Any]
    path: Path

    @property
    def cfg(self) -> AgentConfig:
        return self.net.cfg


def load_agent(path: str | Path, device: torch.device | str = "cpu") -> Agent:
    """Rebuild an agent from its file alone, strictly."""
    path = Path(path)
    meta, tensors = read_checkpoint(path, AGENT_KIND, hint=TRAIN_HINT)
    try:
        cfg = from_dict(AgentConfig, meta.pop("config"), "agent config")
        shape = tuple(int(x) for x in meta.pop("latent_shape"))
        space, world = meta.pop("action_space"), meta.pop("world")
        if meta.pop("observation") != "latents" or len(shape) != 3 or space.get("type") != "Discrete":
            raise ValueError("this version reads agents of latent observations and discrete actions")
        n = int(space["n"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: an incomplete or foreign agent file ({e}); train one with `{TRAIN_HINT}`") from None
    try:
        check_fits(lambda: AgentNet(cfg, shape, n), tensors, "agent", path)
    except (TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: its config describes no valid agent ({e}); train one with `{TRAIN_HINT}`") from None
    net = AgentNet(cfg, shape, n)
    load_module(net, tensors, "agent", path)
    return Agent(net.to(device).eval(), world, space, meta, path)
