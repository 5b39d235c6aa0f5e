"""Source worlds: the real env behind a world, with its frames, keymap, fps and data policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from envs.games import atari, boxing, carracing, generic, pong
from envs.games.action_repeat import ActionRepeat
from envs.games.keymaps import Keymap
from envs.games.policies import RandomPolicy
from envs.games.preprocessing import FrameObservation
from worldsim.spaces import space_to_dict

KINDS = ("carracing", "atari", "gym")
POLICIES = ("driver", "pursuit", "random")


@dataclass
class SourceConfig:
    """Which real env a world is made from, and how its data is recorded (``configs/world/*.yaml``)."""

    name: str = "carracing"
    """World name: names the dataset and run folders and the shipped checkpoint."""
    kind: str = "carracing"
    """``carracing`` (CarRacing with its driving policy), ``atari`` (any ALE id) or ``gym`` (any Gymnasium id)."""
    env_id: str = "CarRacing-v3"
    """Gymnasium id of the real env."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``gymnasium.make``."""
    frame_size: int = 64
    """Frames are resized to (frame_size, frame_size, 3) uint8."""
    fps: float | None = None
    """Frames per second of play; None takes the env's ``render_fps`` (15 for Atari with frame skip 4)."""
    policy: str = "driver"
    """Data policy: ``driver`` (CarRacing, Atari Pong and Boxing), ``pursuit`` (CarRacing: a second, different
    driver, which the evaluation uses to test a world under actions its data never saw) or ``random``."""
    repeat_prob: float = 0.0
    """For the random policy: probability of repeating the previous action (sticky actions)."""
    max_episode_steps: int = 1000
    """Episodes are truncated after this many steps (steps of the world: ``frame_skip`` game frames each)."""
    frame_skip: int = 1
    """Each step holds one action for this many frames of the real env (rewards summed, the last frame kept):
    a world that advances this many game frames per network call. CarRacing and ``gym`` kinds; Atari ids
    already skip 4 inside ALE."""

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"world.kind must be one of {KINDS}, got {self.kind!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"world.policy must be one of {POLICIES}, got {self.policy!r}")
        if self.policy == "driver" and not has_driver(self.kind, self.env_id):
            raise ValueError("world.policy=driver exists for CarRacing and Atari Pong and Boxing only; "
                             "use world.policy=random")
        if self.policy == "pursuit" and self.kind != "carracing":
            raise ValueError("world.policy=pursuit drives CarRacing only; use world.policy=random")
        if self.frame_size < 8:
            raise ValueError(f"world.frame_size must be at least 8, got {self.frame_size}")
        if isinstance(self.frame_skip, bool) or not isinstance(self.frame_skip, int) or self.frame_skip < 1:
            raise ValueError(f"world.frame_skip must be a whole number >= 1, got {self.frame_skip!r}")
        if self.frame_skip > 1 and self.kind == "atari":
            raise ValueError("Atari envs already repeat each action 4 frames inside ALE (frameskip); keep "
                             "world.frame_skip=1 for world.kind=atari")


def atari_driver(env_id: str):
    """The scripted data driver of an ALE game (a class taking the rng), or None where there is none."""
    if pong.is_pong(env_id):
        return pong.PongDriver
    if boxing.is_boxing(env_id):
        return boxing.BoxingDriver
    return None


def has_driver(kind: str, env_id: str) -> bool:
    """Whether a scripted data driver (``world.policy=driver``) exists for this game: CarRacing's, or an ALE
    game's RAM driver."""
    return kind == "carracing" or (kind == "atari" and atari_driver(env_id) is not None)


class SourceGame:
    """Makes the real env (observations: uint8 frames), its policy and keymap."""

    def __init__(self, cfg: SourceConfig) -> None:
        cfg.validate()
        self.cfg = cfg

    def make_env(self, render_mode: str | None = None) -> gym.Env:
        """The real env with frame observations of shape (frame_size, frame_size, 3)."""
        c = self.cfg
        kwargs = dict(c.env_kwargs)
        if c.frame_skip > 1:  # the game's own step limit counts game frames: it must not cut episodes short
            kwargs["max_episode_steps"] = c.max_episode_steps * c.frame_skip
        if c.kind == "carracing":
            env = carracing.make(c.env_id, render_mode, **kwargs)
        elif c.kind == "atari":
            env = atari.make(c.env_id, render_mode, c.frame_size, **kwargs)
        else:
            env = generic.make(c.env_id, render_mode, **kwargs)
        if c.frame_skip > 1:
            env = ActionRepeat(env, c.frame_skip)
        env = FrameObservation(env, c.frame_size)
        return gym.wrappers.TimeLimit(env, c.max_episode_steps)

    def make_policy(self, rng: np.random.Generator, env: gym.Env):
        if self.cfg.policy == "driver":
            if self.cfg.kind == "atari":
                return atari_driver(self.cfg.env_id)(rng)
            return carracing.DrivingPolicy(rng, self.cfg.frame_skip)
        if self.cfg.policy == "pursuit":
            return carracing.PursuitDriver(rng)
        return RandomPolicy(env.action_space, rng, self.cfg.repeat_prob)

    def keymap(self, env: gym.Env) -> Keymap:
        if self.cfg.kind == "carracing":
            return carracing.keymap()
        if self.cfg.kind == "atari":
            if pong.is_pong(self.cfg.env_id):
                return pong.keymap(self.cfg.name)
            return atari.keymap(env, self.cfg.name)
        return generic.keymap(env, self.cfg.name)

    def fps(self, env: gym.Env) -> float:
        if self.cfg.fps is not None:
            return float(self.cfg.fps)
        if self.cfg.kind == "atari":
            return atari.FPS
        return float(env.unwrapped.metadata.get("render_fps") or 30) / self.cfg.frame_skip

    def describe(self, env: gym.Env) -> dict[str, Any]:
        """The JSON source description stored in every shard and checkpoint."""
        c = self.cfg
        return {
            "world": c.name,
            "kind": c.kind,
            "env_id": c.env_id,
            "env_kwargs": c.env_kwargs,
            "frame_size": c.frame_size,
            "fps": self.fps(env),
            "action_space": space_to_dict(env.action_space),
            "policy": c.policy,
            "repeat_prob": c.repeat_prob,
            "max_episode_steps": c.max_episode_steps,
            "frame_skip": c.frame_skip,
            "keymap": self.keymap(env).to_dict(),
            "provenance": {"kind": "real", "policy": c.policy},
        }


def source_game(source: dict[str, Any]) -> SourceGame:
    """The real env behind a dataset or world file, from its stored source description.

    A file's metadata never makes the program import code: an ``env_id`` of the form ``module:Env`` (which
    Gymnasium would import) is refused; the env must be registered under a plain id by code the user runs."""
    env_id = str(source.get("env_id", ""))
    if ":" in env_id:
        raise ValueError(f"the file names its real env {env_id!r}, which would import the module "
                         f"{env_id.split(':')[0]!r}; a world file or dataset must not make worldsim import code. "
                         "If you trust that module, register its env under a plain id (gymnasium.register) in your "
                         "own script and use that")
    names = {f for f in SourceConfig.__dataclass_fields__}
    cfg = SourceConfig(**{k: v for k, v in source.items() if k in names and k != "name"})
    cfg.name = source.get("world", cfg.name)
    return SourceGame(cfg)
