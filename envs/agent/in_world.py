"""N worlds as an agent sees them: stacked latent observations, one decision every ``action_repeat`` frames,
episodes that end at the predicted termination or after ``max_frames`` frames.

:class:`AgentWorlds` is the batched core over :class:`~envs.worldenv.core.WorldCore` (latent observations, so the
VAE decoder never runs). :class:`AgentWorldEnv` is one of them as a Gymnasium env (what the RL library's env
checker checks); :func:`sb3_vec_env` adapts the batch to Stable-Baselines3's VecEnv (same-step autoreset,
``terminal_observation`` and ``episode`` in the infos), so N worlds cost one batched model call per frame.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.agent.network import AgentConfig
from envs.agent.view import AgentView
from envs.worldenv.core import WorldCore
from worldsim.spaces import check_actions


class AgentWorlds:
    """N worlds of one world file, stepped together, as the agent sees them."""

    def __init__(self, core: WorldCore, cfg: AgentConfig, max_frames: int = 1000, seed: int = 0,
                 starts: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """``starts``: clips (frames uint8 (N, T, H, W, 3), actions (N, T)) each episode starts from one of, at
        random (:func:`envs.agent.starts.data_starts`); None = the world file's own start contexts."""
        if core.observation != "latents":
            raise ValueError("agent worlds need a WorldCore with observation='latents'")
        if not hasattr(core.action_space, "n"):
            raise ValueError(f"agents need a discrete action space; this world has {core.action_space}")
        self.core, self.cfg, self.n, self.max_frames = core, cfg, core.n, int(max_frames)
        self.latent_shape = tuple(core.observation_space().shape)
        self.view = AgentView(cfg, self.latent_shape, self.n)
        self.observation_space = self.view.space
        self.action_space = core.action_space
        self.rng = np.random.default_rng(seed)
        core.seed(seed)
        self.frames = np.zeros(self.n, np.int64)
        self.returns = np.zeros(self.n, np.float64)
        self.started = False
        self.starts = starts
        if starts is not None and (len(starts[0]) != len(starts[1]) or not len(starts[0])):
            raise ValueError("starts must be non-empty frames (N, T, H, W, 3) and actions (N, T) of the same N")

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.core.seed(seed)

    def reset(self, worlds: np.ndarray | None = None) -> np.ndarray:
        """(Re)start ``worlds`` (indices; None = all) from random start contexts -> observations of all (N, ...)."""
        idx = np.arange(self.n) if worlds is None else np.asarray(worlds)
        if len(idx):
            if self.starts is None:
                contexts = [self.core.context(self.rng, None)[:2] for _ in idx]
            else:
                pick = self.rng.integers(len(self.starts[0]), size=len(idx))
                contexts = [(self.starts[0][j], self.starts[1][j]) for j in pick]
            self.core.start(idx, contexts)
            self.view.start(self.core.latents(idx), idx)
            self.frames[idx], self.returns[idx] = 0, 0.0
        self.started = True
        return self.view.obs.copy()

    def step(self, actions, autoreset: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        """actions (N,) held for ``action_repeat`` frames -> observations (N, S*C, h, w), summed predicted rewards
        float32 (N,), terminated (N,), truncated (N,), infos (one dict per world). With ``autoreset`` ended
        worlds restart at once; their last observation is ``infos[i]["terminal_observation"]`` and the episode's
        predicted return and length (frames) are ``infos[i]["episode"]``."""
        if not self.started:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = check_actions(self.action_space, actions, self.n)  # once per decision, not per frame
        total = np.zeros(self.n, np.float32)
        ended = np.zeros(self.n, bool)
        for _ in range(self.cfg.action_repeat):
            _, rewards, terminated, _ = self.core.step(actions, checked=True)
            total += np.where(ended, 0.0, rewards)
            self.frames += ~ended
            ended |= terminated
        terminated = ended
        truncated = ~terminated & (self.frames >= self.max_frames)
        self.returns += total
        self.view.push(self.core.latents())
        infos: list[dict[str, Any]] = [{} for _ in range(self.n)]
        done = np.flatnonzero(terminated | truncated)
        for i in done:
            infos[i] = {"episode": {"r": float(self.returns[i]), "l": int(self.frames[i])},
                        "TimeLimit.truncated": bool(truncated[i])}
        obs = self.view.obs.copy()
        if autoreset and len(done):
            for i in done:
                infos[i]["terminal_observation"] = obs[i].copy()
            obs = self.reset(done)
        return obs, total, terminated, truncated, infos


class AgentWorldEnv(gym.Env):
    """One world as the agent sees it, as a Gymnasium env (latent observations, actions held for
    ``action_repeat`` frames, predicted rewards summed over them)."""

    metadata = {"render_modes": []}

    def __init__(self, checkpoint: str, cfg: AgentConfig | None = None, max_frames: int = 1000, device: str = "cpu",
                 dtype: str = "auto", window: int | None = None) -> None:
        core = WorldCore(1, checkpoint, device=device, dtype=dtype, observation="latents", window=window)
        self.worlds = AgentWorlds(core, cfg or AgentConfig(), max_frames)
        self.observation_space, self.action_space = self.worlds.observation_space, self.worlds.action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.worlds.seed(int(self.np_random.integers(2**62)))
        return self.worlds.reset()[0], {}

    def step(self, action):
        obs, r, term, trunc, info = self.worlds.step(np.asarray([action]), autoreset=False)
        return obs[0], float(r[0]), bool(term[0]), bool(trunc[0]), info[0]


def sb3_vec_env(worlds: AgentWorlds):
    """The batch as a Stable-Baselines3 VecEnv (needs the ``rl`` extra)."""
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv

    class WorldVecEnv(VecEnv):
        render_mode = None

        def __init__(self) -> None:
            super().__init__(worlds.n, worlds.observation_space, worlds.action_space)
            self.worlds, self._actions = worlds, None

        def reset(self):
            return self.worlds.reset()

        def step_async(self, actions) -> None:
            self._actions = np.asarray(actions).reshape(self.num_envs)

        def step_wait(self):
            obs, rewards, terminated, truncated, infos = self.worlds.step(self._actions)
            return obs, rewards, terminated | truncated, infos

        def close(self) -> None:
            pass

        def get_attr(self, attr_name, indices=None):
            return [getattr(self, attr_name)] * len(self._get_indices(indices))

        def set_attr(self, attr_name, value, indices=None) -> None:
            setattr(self, attr_name, value)

        def env_method(self, method_name, *args, indices=None, **kwargs):
            raise AttributeError(f"the worlds of a WorldVecEnv have no method {method_name!r}")

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * len(self._get_indices(indices))

        def seed(self, seed=None):
            if seed is not None:
                self.worlds.seed(int(seed))
            return [seed] * self.num_envs

    return WorldVecEnv()
