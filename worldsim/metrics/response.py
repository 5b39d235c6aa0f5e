"""Key response of a world: how much holding each action changes the picture, against sampling noise.

The measure behind the evaluation's action response and the sampler sweep: a world whose frames barely
depend on its keys can still score well on PSNR (the mean of futures is close to every future).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worldsim.engine.sampler import SamplerConfig
from worldsim.world import World


def held_actions(space, k: int, seed: int) -> list:
    """The actions the response test holds: every action of a small discrete space, else k samples."""
    if hasattr(space, "n") and int(space.n) <= 32:
        return [int(space.start) + i for i in range(int(space.n))]
    space.seed(seed)
    return [space.sample() for _ in range(k)]


def held_last_frames(world: World, context: np.ndarray, context_actions: np.ndarray, frames: int, seed: int,
                     sampler: SamplerConfig | None = None) -> tuple[list, np.ndarray]:
    """From each context (E, T, H, W, 3), every action of ``held_actions`` held for ``frames`` frames, once with
    sampling seed ``seed`` and once with ``seed + 1``: (the actions, the last frames (2, E, n, H, W, 3) float32).
    One simulator per action, so every action sees the same noise."""
    acts = held_actions(world.action_space, 4, seed)
    e = len(context)
    last = []
    for s in (seed, seed + 1):
        runs = []
        for act in acts:
            held = np.broadcast_to(np.asarray(act), (e, frames, *np.shape(act)))
            runs.append(world.simulator(e, sampler, seed=s).rollout(context, context_actions, held)[:, -1].astype(np.float32))
        last.append(np.stack(runs, 1))
    return acts, np.stack(last)


def action_response(world: World, context: np.ndarray, context_actions: np.ndarray, frames: int, seed: int,
                    sampler: SamplerConfig | None = None) -> dict[str, Any]:
    """How much the keys change the picture, against sampling noise: from each context (E, T, H, W, 3),
    every action is held for ``frames`` frames with the same sampling noise, and again with another
    seed. Reports the mean absolute pixel difference (0-255) of the last frames between different
    actions (``action_spread``) and between the two seeds of one action (``seed_spread``), and per
    action vs the first (e.g. no-op). ``sampler``: other sampler settings than the world's."""
    acts, last = held_last_frames(world, context, context_actions, frames, seed, sampler)
    return spreads(last[0], last[1], acts, frames)


def spreads(a: np.ndarray, b: np.ndarray | None, acts: list, frames: int) -> dict[str, Any]:
    """Last frames (E, n, H, W, 3) per held action (``b``: the same with another seed) -> the figures."""
    n = a.shape[1]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    out = {"frames": frames, "actions": [np.asarray(x).tolist() for x in acts],
           "action_spread": float(np.mean([np.abs(a[:, i] - a[:, j]).mean() for i, j in pairs])) if pairs else 0.0,
           "vs_first_action": [float(np.abs(a[:, j] - a[:, 0]).mean()) for j in range(n)]}
    if b is not None:
        out["seed_spread"] = float(np.abs(a - b).mean())
        out["ratio"] = out["action_spread"] / max(out["seed_spread"], 1e-9)
    return out
