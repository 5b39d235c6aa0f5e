"""Where imagined episodes start: short real clips from the world's own training data.

An agent that always starts from the same few contexts and dreams 1,000 frames ahead learns what the
world gets wrong far from its data (measured: a policy that never steered was shown an endless straight
road and scored 345 in the world, 15 in the real game). Starting every imagined episode from a real
moment of the data — a curve coming up, the car half off the road — and dreaming a short horizon from
there keeps the agent where the world is right (as DIAMOND, IRIS and Dreamer start imagination from real
states). The clips come from ``data_dir`` when it holds the world's dataset, or else from replaying the
data policy on the data's own tracks (``stage=collect``'s seeds): the agent itself never acts in the real
game.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from envs.games.source import source_game
from envs.recording.collect import run_episode
from worldsim.world import World


def _episodes(world: World, data_dir: str | Path | None, episodes: int, seed: int):
    folder = Path(data_dir) if data_dir else None
    if folder is not None and folder.is_dir() and any(folder.glob("*.safetensors")):
        from worldsim.data.dataset import EpisodeDataset

        data = EpisodeDataset(folder)
        for i in range(min(episodes, len(data))):
            ep = data.episode(i)
            yield ep.frames, ep.actions
        return
    sw = source_game(world.source)
    env = sw.make_env()
    try:
        for i in range(episodes):
            ep = run_episode(sw, env, i, seed)
            yield ep.frames, ep.actions
    finally:
        env.close()


def data_starts(world: World, data_dir: str | Path | None, episodes: int = 16, context: int = 8, every: int = 25,
                skip: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clips of ``context`` frames every ``every`` frames of ``episodes`` data episodes (after the first ``skip``:
    CarRacing's zoom-in) -> frames uint8 (N, context, H, W, 3), actions (N, context[, ...])."""
    frames, actions = [], []
    for f, a in _episodes(world, data_dir, episodes, seed):
        if f.shape[1:3] != (world.frame_size, world.frame_size):
            raise ValueError(f"the data's frames are {f.shape[1:3]}, the world makes {world.frame_size}x{world.frame_size}")
        for s in range(skip, len(f) - context, every):
            frames.append(f[s : s + context])
            actions.append(a[s : s + context])
    if not frames:
        raise ValueError(f"no start clips: the data episodes are shorter than {skip + context} frames")
    return np.stack(frames), np.stack(actions)
