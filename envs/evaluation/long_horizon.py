"""The long rollout: thousands of frames under the data policy's actions, real episodes played back to back,
summarised per segment (colour histogram, warping error, pixel activity) against the real frames."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.evaluation.real import real_run
from worldsim.metrics.image import frame_activity, histogram_distance, warp_error
from worldsim.world import World


def long_episodes(world: World, frames: int, context: int, skip: int, seed: int) -> list:
    """Real episodes, one after another, until they hold ``skip + context + frames`` frames."""
    eps, need = [], frames + context + skip
    limit = world.episode_limit + 1
    while (have := sum(len(e) for e in eps)) < need:
        eps += real_run(world, min(limit, need - have + skip + 1), 1, seed + 7919 + len(eps))
    return eps


def long_rollout(world: World, eps: list, frames: int, context: int, skip: int, seed: int):
    """The world replays the concatenated episodes' actions from their first ``context`` frames ->
    (real frames (context + frames, ...), generated frames (frames, ...))."""
    real = np.concatenate([e.frames for e in eps])[skip : skip + context + frames]
    acts = np.concatenate([e.actions for e in eps])[skip : skip + context + frames]
    gen = world.simulator(1, seed=seed + 1).rollout(real[None, :context], acts[None, :context], acts[None, context:])[0]
    return real, gen


def segments(real: np.ndarray, gen: np.ndarray, context: int, frames: int, segment: int) -> list[dict[str, Any]]:
    """Per ``segment`` frames of the rollout: histogram distance, warping errors and activity, world and real."""
    out = []
    for k in range(0, frames, segment):
        g, r = gen[k : k + segment], real[context + k : context + k + segment]
        out.append({"start": k, "histogram_distance": histogram_distance(g, r), "warp_error": warp_error(g),
                    "real_warp_error": warp_error(r), **{f"generated_{a}": b for a, b in frame_activity(g).items()},
                    **{f"real_{a}": b for a, b in frame_activity(r).items()}})
    return out
