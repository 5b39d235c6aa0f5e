"""The batched core behind both world-model envs: a loaded world, its engine, and the checks at the
boundary (start contexts from reset options, actions). N worlds are stepped by one batched model call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from envs.games.keymaps import Keymap
from worldsim.device import resolve_device, resolve_dtype
from worldsim.engine.sampler import check_steps
from worldsim.frames import check_frames, resize_frames
from worldsim.spaces import action_array_spec, check_actions, null_action
from worldsim.world import World, load_world, world_path


def resolve_checkpoint(checkpoint: str | Path | None, world: str | None) -> Path:
    """A world file from an explicit path, or a shipped world's name."""
    if checkpoint is not None and world is not None:
        raise ValueError("give either checkpoint=PATH or world=NAME, not both")
    if checkpoint is not None:
        return Path(checkpoint)
    if world is None:
        raise ValueError("worldsim/World-v0 needs a world file: gym.make('worldsim/World-v0', checkpoint=PATH) "
                         "(made by `python train.py stage=export`), or world=NAME for a shipped one; the shipped "
                         "CarRacing world is gym.make('worldsim/CarRacing-v0')")
    return world_path(world)


OBSERVATIONS = ("frames", "latents")


class WorldCore:
    """N worlds of one world file on one device. Actions in, uint8 frames, rewards and terminations out."""

    def __init__(
        self, num_worlds: int, checkpoint: str | Path | None = None, world: str | None = None, device: str = "auto",
        sampling_steps: int | None = None, guidance: float | None = None, termination_threshold: float = 0.5,
        compile: bool = False, dtype: str = "auto", observation: str = "frames", window: int | None = None,
    ) -> None:
        """observation: ``frames`` (uint8 (H, W, 3), decoded) or ``latents`` (float32 (C, h, w), the world's
        normalised latent frame; the VAE decoder is skipped, a third of a batched step on a CPU); window:
        frames each new frame attends to (default: the world's; shorter is faster, see SamplerConfig.window)."""
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}")
        if num_worlds < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_worlds}")
        if not 0.0 < termination_threshold <= 1.0:
            raise ValueError(f"termination_threshold must be in (0, 1], got {termination_threshold}")
        self.device = resolve_device(device)
        # The DiT runs in this dtype (auto: bf16 on GPUs and on CPUs with native bf16, where the simulator keeps
        # attention and the KV cache float32); the VAE stays float32.
        self.world: World = load_world(resolve_checkpoint(checkpoint, world), self.device,
                                        resolve_dtype(dtype, self.device))
        sampler = self.world.sampler.override(
            steps=None if sampling_steps is None else check_steps(sampling_steps, "sampling_steps"),
            guidance=None if guidance is None else float(guidance), window=window)
        self.n, self.threshold, self.observation = num_worlds, termination_threshold, observation
        self.sim = self.world.simulator(num_worlds, sampler, compile=compile)
        self.action_space = self.world.action_space
        self.action_shape, self.action_dtype = action_array_spec(self.action_space)
        self.keymap = Keymap.from_dict(self.world.source["keymap"]) if "keymap" in self.world.source else None
        self.model_ms = 0.0

    def seed(self, seed: int) -> None:
        self.sim.seed(seed)

    def context(self, rng: np.random.Generator, options: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray, Any]:
        """Reset options -> (frames uint8 (T, H, W, 3), actions (T[, ...]), where from).

        ``options["frames"]``: a clip (T, H, W, 3) or one image (H, W, 3) of any size (resized);
        ``options["actions"]``: the T actions that led to them (default: the null action).
        Without frames, one of the world's start contexts is chosen with ``rng``."""
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict (e.g. {{'frames': image}}), got {type(options).__name__} "
                            f"{options!r}")
        options = dict(options or {})
        unknown = set(options) - {"frames", "actions", "reset_mask"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; use 'frames' (an image or clip) and 'actions'")
        w = self.world
        if "frames" not in options:
            if "actions" in options:
                raise ValueError("reset option 'actions' needs 'frames' (the context they led to)")
            i = int(rng.integers(len(w.context_frames)))
            return w.context_frames[i], w.context_actions[i], i
        raw = options["frames"]
        try:
            frames = check_frames(np.asarray(raw), "reset option 'frames'")
        except (TypeError, ValueError) as e:
            raise type(e)(f"{e}; give one RGB image (H, W, 3) or a clip (T, H, W, 3), dtype uint8, any size") from None
        frames = resize_frames(frames, w.frame_size)
        window = w.dit.cfg.window
        if "actions" in options and options["actions"] is not None:
            try:
                actions = check_actions(self.action_space, options["actions"], len(frames))
            except ValueError as e:
                raise ValueError(f"reset option 'actions' (one action per context frame): {e}") from None
        else:
            actions = np.stack([null_action(self.action_space)] * len(frames))
        return frames[-window:], actions[-window:], "options"

    def start(self, worlds: np.ndarray, contexts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(Re)start ``worlds`` (indices) from their contexts -> their first frames uint8 (n, H, W, 3)."""
        full = len(worlds) == self.n and not self.sim.ready
        lengths = {len(f) for f, _ in contexts}
        if len(lengths) == 1:  # one batched prefill
            frames = np.stack([f for f, _ in contexts])
            actions = np.stack([a for _, a in contexts])
            return self.sim.prefill(frames, actions, None if full else worlds)
        if full:  # different lengths on the first start: start all with the first context, then restart the rest
            f0, a0 = contexts[0]
            self.sim.prefill(np.stack([f0] * self.n), np.stack([a0] * self.n))
        return np.concatenate([self.sim.prefill(f[None], a[None], [w]) for w, (f, a) in zip(worlds, contexts, strict=True)])

    def observation_space(self) -> spaces.Box:
        """One world's observation space."""
        if self.observation == "latents":
            c = self.world.dit.cfg
            return spaces.Box(-np.inf, np.inf, (c.latent_channels, c.latent_size, c.latent_size), np.float32)
        s = self.world.frame_size
        return spaces.Box(0, 255, (s, s, 3), np.uint8)

    def latents(self, worlds: np.ndarray | None = None) -> np.ndarray:
        """The current normalised latent frame of each world (or of ``worlds``): float32 (N, C, h, w)."""
        z = self.sim.last[:, 0].float().cpu().numpy()
        return z if worlds is None else z[worlds]

    def observe(self, frames: np.ndarray, worlds: np.ndarray | None = None) -> np.ndarray:
        """What the env shows: the decoded frames given, or the latents in latent mode."""
        return self.latents(worlds) if self.observation == "latents" else frames

    def step(self, actions: np.ndarray, checked: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """actions (N[, ...]) -> observations (frames uint8 (N, H, W, 3) or latents float32 (N, C, h, w)),
        rewards float32 (N,), terminated bool (N,), termination probabilities float32 (N,). ``checked``: the
        caller already passed them through ``check_actions``."""
        start = time.perf_counter()
        a = torch.as_tensor(actions if checked else check_actions(self.action_space, actions, self.n))
        frames, rewards, probs = self.sim.step(a, decode=self.observation == "frames")
        frames = self.observe(frames)
        rewards, probs = rewards.cpu().numpy().astype(np.float32), probs.cpu().numpy().astype(np.float32)
        self.model_ms = 1e3 * (time.perf_counter() - start)
        return frames, rewards, probs >= self.threshold, probs
