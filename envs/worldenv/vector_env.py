"""``WorldModelVectorEnv``: N worlds stepped by one batched model call per step.

``gymnasium.make_vec("worldsim/CarRacing-v0", num_envs=N, vectorization_mode="vector_entry_point")``.
Autoreset mode NEXT_STEP: the step after a world's episode ends resets that world (its
observation is the new start frame, reward 0, not terminated or truncated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from envs.worldenv.core import WorldCore


class WorldModelVectorEnv(gym.vector.VectorEnv):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self, num_envs: int = 1, checkpoint: str | Path | None = None, world: str | None = None, device: str = "auto",
        sampling_steps: int | None = None, guidance: float | None = None, max_episode_steps: int | None = None,
        termination_threshold: float = 0.5, compile: bool = False, dtype: str = "auto", render_mode: str | None = None,
        observation: str = "frames", window: int | None = None,
    ) -> None:
        """As :class:`~envs.worldenv.env.WorldModelEnv`, for ``num_envs`` worlds."""
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"the vector env renders rgb_array only, got render_mode={render_mode!r}")
        if render_mode is not None and observation != "frames":
            raise ValueError("render_mode needs observation='frames' (with latents the frames are never decoded)")
        self.core = WorldCore(num_envs, checkpoint, world, device, sampling_steps, guidance, termination_threshold, compile, dtype,
                              observation, window)
        w = self.core.world
        self.num_envs, self.render_mode = num_envs, render_mode
        self.metadata = dict(self.metadata, render_fps=w.fps)
        self.single_observation_space = self.core.observation_space()
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.max_episode_steps = int(max_episode_steps or w.episode_limit)
        self._frames = np.zeros((num_envs, *self.single_observation_space.shape), self.single_observation_space.dtype)
        self._steps = np.zeros(num_envs, np.int64)
        self._needs_reset = np.zeros(num_envs, bool)
        self._started = False

    @property
    def world(self):
        return self.core.world

    def _per_world(self, options: dict[str, Any] | None, worlds: np.ndarray) -> list[dict[str, Any]]:
        """Split reset options into one dict per world: 'frames' (and 'actions') may be one context for all
        worlds, or a sequence with one context per world (length num_envs)."""
        options = {k: v for k, v in (options or {}).items() if k != "reset_mask"}
        if "frames" not in options:
            return [options] * len(worlds)
        frames, actions = options["frames"], options.get("actions")
        per_world = isinstance(frames, (list, tuple)) or (isinstance(frames, np.ndarray) and frames.ndim == 5)
        if not per_world:
            return [options] * len(worlds)
        if len(frames) != self.num_envs:
            raise ValueError(f"reset option 'frames' has {len(frames)} contexts; give one per world ({self.num_envs}) "
                             "or a single image/clip for all")
        return [{"frames": frames[i], "actions": None if actions is None else actions[i]} for i in worlds]

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """options: 'frames'/'actions' (one context for all worlds, or one per world) and 'reset_mask'
        (bool (num_envs,): reset only those worlds; the others keep going)."""
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs:
                raise ValueError(f"seed list has {len(seed)} entries for {self.num_envs} worlds")
            seed = seed[0]  # the worlds share one noise generator, seeded by the first seed
        super().reset(seed=seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict (e.g. {{'reset_mask': mask}}), got {type(options).__name__}")
        mask = np.ones(self.num_envs, bool) if options is None or "reset_mask" not in options else \
            np.asarray(options["reset_mask"], dtype=bool)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"reset_mask must be bool ({self.num_envs},), got shape {mask.shape}")
        if not self._started and not mask.all():
            raise ValueError("the first reset starts every world: leave out reset_mask")
        if seed is not None or not self._started:
            self.core.seed(int(self.np_random.integers(2**62)))
        worlds = np.flatnonzero(mask)
        self._started = False  # a reset that fails leaves the env needing a full one
        infos = self._start(worlds, self._per_world(options, worlds))
        self._started = True
        return self._frames.copy(), infos

    def _start(self, worlds: np.ndarray, options: list[dict[str, Any]]) -> dict[str, Any]:
        contexts, origins = [], []
        for opts in options:
            frames, actions, origin = self.core.context(self.np_random, opts)
            contexts.append((frames, actions))
            origins.append(-1 if origin == "options" else origin)
        if len(worlds):
            self._frames[worlds] = self.core.observe(self.core.start(worlds, contexts), worlds)
        self._steps[worlds] = 0
        self._needs_reset[worlds] = False
        context = np.full(self.num_envs, -1, np.int64)
        context[worlds] = origins
        present = np.zeros(self.num_envs, bool)
        present[worlds] = True
        return {"context": context, "_context": present}

    def step(self, actions):
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step()")
        frames, rewards, terminated, probs = self.core.step(actions)
        self._frames[:] = frames
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        # NEXT_STEP autoreset: worlds whose episode ended at the previous step start again now.
        resetting = np.flatnonzero(self._needs_reset)
        infos: dict[str, Any] = {"termination_prob": probs, "_termination_prob": np.ones(self.num_envs, bool)}
        if len(resetting):
            infos.update(self._start(resetting, [{}] * len(resetting)))
            rewards[resetting], terminated[resetting], truncated[resetting] = 0.0, False, False
        self._needs_reset = terminated | truncated
        return self._frames.copy(), rewards, terminated, truncated, infos

    def render(self):
        """rgb_array: a tuple with each world's current frame (Gymnasium's vector render convention)."""
        return tuple(self._frames.copy()) if self.render_mode == "rgb_array" else None
