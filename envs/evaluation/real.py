"""The real episodes a world is measured against: played fresh on held-out seeds, and replayed from a seed."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.games.source import source_game
from envs.recording.collect import run_episode
from worldsim.data.episodes import Episode
from worldsim.world import World


def real_run(world: World, frames_needed: int, episodes: int, seed: int, policy: str | None = None) -> list[Episode]:
    """Episodes of the real env under the data policy (or ``policy``), each at most ``frames_needed`` frames
    (0: full)."""
    source = dict(world.source, **({"policy": policy} if policy else {}))
    if frames_needed:
        source["max_episode_steps"] = frames_needed - 1
    sw = source_game(source)
    env = sw.make_env()
    try:
        return [run_episode(sw, env, i, seed) for i in range(episodes)]
    finally:
        env.close()


def replay_to(env: gym.Env, episode: Episode, end: int) -> np.ndarray | None:
    """Replay ``episode`` from its seed up to frame ``end`` - 1 -> that frame, or None when the replay does not
    reproduce the recorded frame (the env is not deterministic given its seed and actions)."""
    obs, _ = env.reset(seed=episode.info["seed"])
    for a in episode.actions[1:end]:
        obs = env.step(a)[0]
    return obs if np.array_equal(obs, episode.frames[end - 1]) else None


def hold(env: gym.Env, action, frames: int) -> list[np.ndarray]:
    """Step ``action`` for ``frames`` frames -> the frames seen (fewer when the episode ends while it is held)."""
    out = []
    for _ in range(frames):
        obs, _, terminated, truncated, _ = env.step(action)
        out.append(obs)
        if terminated or truncated:
            break
    return out
