"""Record any env — real source envs, world-model envs, single or vector — into episode shards.

Every finished episode is written at once as its own shard (atomically), so nothing
finished is ever lost; the episode in flight is written as a truncated episode when
the env is closed, reset early, or the program stops (exception, Ctrl-C, SIGTERM, SIGHUP:
an exit hook flushes it). Files use the training data format (:mod:`worldsim.data.episodes`),
so a recorded folder can be trained on directly; ``video=True`` adds an mp4 per episode.

    env = RecordEpisodes(gym.make("worldsim/CarRacing-v0"), "data/dreams", video=True)
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from worldsim.data.dataset import EpisodeDataset, describe_provenance, provenance
from worldsim.data.episodes import DatasetError, Episode, write_shard
from worldsim.signals import exit_cleanly_on_stop_signals, restore_handlers, signals_deferred
from worldsim.spaces import action_array_spec, null_action, space_to_dict
from worldsim.video import write_mp4

_MATCH_KEYS = ("env_id", "frame_size", "action_space")


def describe_env(env: gym.Env | gym.vector.VectorEnv) -> dict[str, Any]:
    """The source description of an env: a world-model env's own source, else what the env says of itself."""
    core = getattr(env.unwrapped, "core", None)
    if core is not None and hasattr(core, "world"):  # generated frames: say which world made them
        world = core.world
        return dict(world.source, provenance={"kind": "world", "world_file": str(world.path), "world": world.name})
    single = getattr(env, "single_observation_space", env.observation_space)
    action = getattr(env, "single_action_space", env.action_space)
    spec_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    return {"world": spec_id, "kind": "gym", "env_id": spec_id, "frame_size": int(single.shape[0]),
            "fps": float(env.metadata.get("render_fps") or 30), "action_space": space_to_dict(action),
            "provenance": {"kind": "real", "policy": "recorded"}}


def _check_frame_space(space: gym.Space) -> None:
    if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and space.shape[-1] == 3 and space.shape[0] == space.shape[1]):
        raise ValueError(f"recording needs square uint8 RGB frame observations (S, S, 3), this env observes {space}; "
                         "wrap it with envs.games.preprocessing.FrameObservation first")


class EpisodeWriter:
    """Writes finished episodes into a dataset folder, one shard each (and optionally an mp4 each)."""

    def __init__(self, out: str | Path, source: dict[str, Any], video: bool = False, video_scale: int = 4,
                 allow_mixed: bool = False) -> None:
        self.out, self.source, self.video, self.video_scale = Path(out), source, video, video_scale
        self.out.mkdir(parents=True, exist_ok=True)
        data = EpisodeDataset(self.out, allow_mixed)
        if data.shards:
            for key in _MATCH_KEYS:
                if data.source.get(key) != source.get(key):
                    raise DatasetError(f"{self.out} holds {key}={data.source.get(key)!r} data, this env has "
                                       f"{key}={source.get(key)!r}; record into another folder")
            here, new = provenance(data.source), provenance(source)
            if here != new and not allow_mixed:
                raise DatasetError(f"{self.out} holds {describe_provenance(here)}, this env records "
                                   f"{describe_provenance(new)}; record into another folder (or pass "
                                   "allow_mixed=True to mix them on purpose)")
        self.next_index = max(data.indices(), default=-1) + 1
        self.written: list[Path] = []

    def write(self, episode: Episode) -> Path:
        i = self.next_index
        self.next_index += 1
        episode.info = dict(episode.info, index=i, **{"return": float(episode.rewards.sum())})
        with signals_deferred("writing a recorded episode"):  # a second Ctrl-C waits for the shard
            path = write_shard(self.out / f"ep{i:07d}-{i:07d}.safetensors", [episode], self.source)
            if self.video:
                write_mp4(path.with_suffix(".mp4"), episode.frames, self.source.get("fps", 30), scale=self.video_scale)
        self.written.append(path)
        return path


class EpisodeBuffer:
    """The steps of one episode in flight, in the shard alignment (actions[t] led to frames[t])."""

    def __init__(self, first_frame: np.ndarray, space: gym.Space, info: dict[str, Any]) -> None:
        self.shape, self.dtype = action_array_spec(space)
        self.frames, self.actions = [np.array(first_frame, dtype=np.uint8)], [null_action(space)]
        self.rewards, self.terminated, self.truncated = [0.0], [False], [False]
        self.info = info

    def add(self, frame, action, reward, terminated, truncated) -> None:
        self.frames.append(np.array(frame, dtype=np.uint8))
        self.actions.append(np.asarray(action, dtype=self.dtype).reshape(self.shape))
        self.rewards.append(float(reward))
        self.terminated.append(bool(terminated))
        self.truncated.append(bool(truncated))

    def episode(self, cut: bool = False) -> Episode:
        """The episode; ``cut`` marks the last frame truncated (stopped before the env ended it)."""
        truncated = list(self.truncated)
        if cut and not (self.terminated[-1] or truncated[-1]):
            truncated[-1] = True
        return Episode(np.stack(self.frames), np.stack(self.actions), np.asarray(self.rewards, np.float32),
                       np.asarray(self.terminated), np.asarray(truncated), info=dict(self.info))


class _FlushOnClose:
    """Closing writes the episodes in flight and drops the exit hook. While a recorder is open, SIGTERM and
    SIGHUP exit through Python's shutdown (which runs the hook) instead of killing the process outright."""

    def _guard(self) -> None:
        atexit.register(self.flush)
        self._old_handlers = exit_cleanly_on_stop_signals()

    def close(self):
        try:
            self.flush()
        finally:
            atexit.unregister(self.flush)
            restore_handlers(getattr(self, "_old_handlers", {}))
            super().close()


class RecordEpisodes(_FlushOnClose, gym.Wrapper):
    """Records every episode of a single env into ``out`` (see the module docstring)."""

    def __init__(self, env: gym.Env, out: str | Path, source: dict[str, Any] | None = None, video: bool = False,
                 video_scale: int = 4, allow_mixed: bool = False) -> None:
        """``allow_mixed``: record into a folder that holds data of another provenance (real vs generated)."""
        super().__init__(env)
        _check_frame_space(env.observation_space)
        self.writer = EpisodeWriter(out, source or describe_env(env), video, video_scale, allow_mixed)
        self._buffer: EpisodeBuffer | None = None
        self._guard()

    @property
    def written(self) -> list[Path]:
        """Shards written so far."""
        return self.writer.written

    def flush(self) -> Path | None:
        """Write the episode in flight (as truncated, if the env has not ended it). Safe to call any time."""
        buf, self._buffer = self._buffer, None
        if buf is None or len(buf.frames) < 2:  # a bare reset frame is not an episode
            return None
        return self.writer.write(buf.episode(cut=True))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.flush()
        obs, info = self.env.reset(seed=seed, options=options)
        self._buffer = EpisodeBuffer(obs, self.env.action_space, {"seed": seed} if seed is not None else {})
        return obs, info

    def step(self, action):
        if self._buffer is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except BaseException:
            self.flush()  # the env failed (or Ctrl-C inside it): keep what was recorded
            raise
        self._buffer.add(obs, action, reward, terminated, truncated)
        if terminated or truncated:
            self.flush()
        return obs, reward, terminated, truncated, info



class RecordEpisodesVector(_FlushOnClose, gym.vector.VectorWrapper):
    """Records every episode of every sub-env of a vector env (autoreset mode NEXT_STEP) into ``out``."""

    def __init__(self, env: gym.vector.VectorEnv, out: str | Path, source: dict[str, Any] | None = None,
                 video: bool = False, video_scale: int = 4, allow_mixed: bool = False) -> None:
        super().__init__(env)
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"recording a vector env needs autoreset_mode NEXT_STEP, this one has {mode}")
        _check_frame_space(env.single_observation_space)
        self.writer = EpisodeWriter(out, source or describe_env(env), video, video_scale, allow_mixed)
        self._buffers: list[EpisodeBuffer | None] = [None] * env.num_envs
        self._ended = np.zeros(env.num_envs, bool)
        self._started = False
        self._guard()

    @property
    def written(self) -> list[Path]:
        return self.writer.written

    def _flush_one(self, i: int) -> None:
        buf, self._buffers[i] = self._buffers[i], None
        if buf is not None and len(buf.frames) >= 2:
            self.writer.write(buf.episode(cut=True))

    def flush(self) -> None:
        """Write every episode in flight (as truncated)."""
        for i in range(len(self._buffers)):
            self._flush_one(i)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        mask = np.ones(self.num_envs, bool) if not options or "reset_mask" not in options else np.asarray(options["reset_mask"])
        for i in np.flatnonzero(mask):
            self._flush_one(i)
            self._buffers[i] = EpisodeBuffer(obs[i], self.single_action_space, {})
        self._ended[mask] = False
        self._started = True
        return obs, info

    def step(self, actions):
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step()")
        try:
            obs, rewards, terminated, truncated, info = self.env.step(actions)
        except BaseException:
            self.flush()
            raise
        for i in range(self.num_envs):
            if self._ended[i]:  # this step reset world i: its observation starts a new episode
                self._buffers[i] = EpisodeBuffer(obs[i], self.single_action_space, {})
                continue
            self._buffers[i].add(obs[i], actions[i], rewards[i], terminated[i], truncated[i])
            if terminated[i] or truncated[i]:
                self._flush_one(i)
        self._ended = np.asarray(terminated) | np.asarray(truncated)
        return obs, rewards, terminated, truncated, info

