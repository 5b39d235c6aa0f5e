"""``WorldModelEnv``: a trained world as a Gymnasium env (``gymnasium.make("worldsim/CarRacing-v0")``).

Observations are the generated frames (uint8 (H, W, 3), fresh arrays); actions are
the source env's; rewards and terminations are the model's predictions. ``reset``
starts from one of the world's start contexts, or from any image or clip given as
``options={"frames": ...}`` (image-to-world).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs.worldenv.core import WorldCore
from worldsim.spaces import check_actions


class WorldModelEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 30}

    def __init__(
        self, checkpoint: str | Path | None = None, world: str | None = None, device: str = "auto",
        sampling_steps: int | None = None, guidance: float | None = None, max_episode_steps: int | None = None,
        termination_threshold: float = 0.5, compile: bool = False, dtype: str = "auto", render_mode: str | None = None, render_scale: int = 8,
        observation: str = "frames", window: int | None = None,
    ) -> None:
        """checkpoint: a world file, or world: a shipped world's name (e.g. carracing): one of the two;
        device: auto | cpu | cuda; sampling_steps (1-8) and guidance override the world's sampler; the episode is
        truncated after max_episode_steps (default: the source env's limit); predicted termination
        probabilities at or above termination_threshold end the episode; compile runs the model step through
        torch.compile (slow first steps, then faster); dtype of the DiT: auto (bfloat16 on CUDA and on a CPU
        with native bf16 (AVX-512 BF16 / AMX), else float32), float32 or bfloat16 (on a CPU without AMX its attention and
        cache stay float32); observation:
        frames (uint8 (H, W, 3)) or latents (the world's normalised latent frame, float32 (C, h, w): no VAE
        decode, nothing to render); window: frames each new frame attends to (default: the world's; 8 matched
        16 on the shipped world's fidelity at a lower cost)."""
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if render_mode is not None and observation != "frames":
            raise ValueError("render_mode needs observation='frames' (with latents the frames are never decoded)")
        self.core = WorldCore(1, checkpoint, world, device, sampling_steps, guidance, termination_threshold, compile, dtype,
                              observation, window)
        w = self.core.world
        self.metadata = dict(self.metadata, render_fps=w.fps)
        self.render_mode, self.render_scale = render_mode, render_scale
        self.observation_space = self.core.observation_space()
        self.action_space = self.core.action_space
        self.max_episode_steps = int(max_episode_steps or w.episode_limit)
        self._frame: np.ndarray | None = None
        self._steps = 0
        self._window = None

    @property
    def world(self):
        return self.core.world

    @property
    def spec(self):
        return self.__dict__.get("_spec")

    @spec.setter
    def spec(self, value) -> None:
        # gymnasium.make stores a spec without a step limit after building the env; the env truncates
        # episodes itself, so its spec states that limit (env.spec.max_episode_steps).
        if value is not None and value.max_episode_steps is None:
            value = dataclasses.replace(value, max_episode_steps=self.max_episode_steps)
        self.__dict__["_spec"] = value

    @property
    def sampler(self):
        """The sampler the world runs with now (:class:`~worldsim.engine.sampler.SamplerConfig`)."""
        return self.core.sim.sampler

    def retune(self, **changes) -> None:
        """Change the sampler between steps (play.py's live keys): ``steps=``, ``guidance=``, ... as
        :meth:`~worldsim.engine.sampler.SamplerConfig.override` takes them, with its checks."""
        self.core.sim.sampler = self.core.sim.sampler.override(**changes)

    def latent(self) -> np.ndarray:
        """The current normalised latent frame: float32 (C, h, w) (what an agent trained in the world reads)."""
        return self.core.latents()[0]

    @property
    def model_ms(self) -> float:
        """Wall time of the last step's model call (generation + decode), in ms."""
        return self.core.model_ms

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._frame = None  # a reset that fails leaves the env needing another one
        # The model's noise follows the env's seed: seeded resets replay exactly (on CPU).
        self.core.seed(int(self.np_random.integers(2**62)))
        frames, actions, origin = self.core.context(self.np_random, options)
        self._frame = self.core.observe(self.core.start(np.array([0]), [(frames, actions)]))[0]
        self._steps = 0
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), {"context": origin, "context_frames": len(frames)}

    def step(self, action):
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        frames, rewards, terminated, probs = self.core.step(check_actions(self.action_space, action)[None], checked=True)
        self._frame = frames[0]
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        info = {"termination_prob": float(probs[0])}  # deterministic; timing is in self.model_ms
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), float(rewards[0]), bool(terminated[0]), truncated, info

    def render(self):
        if self._frame is None:
            return None
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        if self.render_mode == "human":
            if self._window is None:
                from envs.window import Window

                self._window = Window(f"worldsim: {self.world.name}", self._frame.shape[:2], self.render_scale)
            self._window.show(self._frame)
        return None

    def get_keys_to_action(self) -> dict[tuple[int, ...], Any]:
        """Pygame key codes -> actions, from the world's keymap (for ``gymnasium.utils.play.play``)."""
        if self.core.keymap is None:
            raise ValueError(f"{self.world.name} has no keymap")
        return self.core.keymap.keys_to_action()

    def close(self):
        if self._window is not None:
            self._window.close()
            self._window = None
