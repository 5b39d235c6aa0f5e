"""Action response: every action held for a few frames from the same start, in the world and in the real game
replayed to the same state; the spread between the actions' last frames, world against game."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.evaluation.real import hold, replay_to
from envs.games.source import source_game
from worldsim.metrics.response import held_actions, held_last_frames, spreads
from worldsim.world import World


def real_held_last_frames(world: World, episodes: list, end: int, frames: int, seed: int) -> tuple[list, np.ndarray] | None:
    """The action-response test in the real env: each episode is replayed from its seed up to frame ``end`` - 1
    (the last context frame), then every action is held for ``frames`` frames: (the actions, the last frames
    (E, n, H, W, 3) float32). None when a replay does not reproduce the recorded frame (the env is not
    deterministic given its seed and actions)."""
    acts = held_actions(world.action_space, 4, seed)
    env = source_game(dict(world.source)).make_env()
    last = []
    try:
        for e in episodes:
            runs = []
            for act in acts:
                start = replay_to(env, e, end)
                if start is None:
                    return None
                # The episode may end while the key is held: its last frame is kept.
                runs.append(([start] + hold(env, act, frames))[-1].astype(np.float32))
            last.append(np.stack(runs))
    finally:
        env.close()
    return acts, np.stack(last)


def action_response(world: World, eps: list, real: np.ndarray, acts: np.ndarray, c: int, skip: int, frames: int,
                    seed: int) -> tuple[dict[str, Any], list, np.ndarray, tuple | None]:
    """The report entry, with what the key-object readers reuse: (report, held actions, the world's last frames
    per action, the real game's (actions, last frames) or None)."""
    held, model_last = held_last_frames(world, real[:, :c], acts[:, :c], frames, seed)
    real_held = real_held_last_frames(world, eps, skip + c, frames, seed)
    response = {"model": spreads(model_last[0], model_last[1], held, frames),
                "real": None if real_held is None else spreads(real_held[1], None, held, frames)}
    if response["real"]:
        response["model_vs_real"] = response["model"]["action_spread"] / max(response["real"]["action_spread"], 1e-9)
    return response, held, model_last, real_held
