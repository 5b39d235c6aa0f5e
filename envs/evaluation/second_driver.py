"""Fidelity and realism under a driver that did not collect the data, from random mid-track starts of
held-out tracks."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.evaluation.fidelity import fidelity_at
from envs.evaluation.real import real_run
from envs.evaluation.realism import realism
from envs.games.source import SourceConfig
from worldsim.world import World


def drives(world: World, driver: str) -> bool:
    """Whether ``driver`` (a world.policy name) can drive this world's game."""
    try:
        SourceConfig(kind=world.source.get("kind", "gym"), policy=driver).validate()
    except ValueError:
        return False
    return True


def second_driver(world: World, cfg) -> dict[str, Any] | None:
    """``cfg``: the :class:`~envs.evaluation.evaluate.EvalConfig`. None when it names no second driver, or one
    that cannot drive the world's game, or too few of its episodes last long enough."""
    if not cfg.second_driver or cfg.second_episodes < 2 or not drives(world, cfg.second_driver):
        return None
    c, horizon = cfg.context, max(cfg.horizons)
    limit = world.episode_limit + 1
    top = max(cfg.skip, min(cfg.second_skip_max, limit - c - horizon))
    rng = np.random.default_rng(cfg.seed + 31)
    starts = rng.integers(cfg.skip, top + 1, cfg.second_episodes)
    eps = real_run(world, top + c + horizon, cfg.second_episodes, cfg.seed + 104729, cfg.second_driver)
    keep = [(e, int(s)) for e, s in zip(eps, starts, strict=True) if len(e) >= s + c + horizon]
    if len(keep) < 2:
        return None
    real = np.stack([e.frames[s : s + c + horizon] for e, s in keep])
    acts = np.stack([e.actions[s : s + c + horizon] for e, s in keep])
    gen = world.simulator(len(real), seed=cfg.seed + 2).rollout(real[:, :c], acts[:, :c], acts[:, c:])
    return {"driver": cfg.second_driver, "episodes": len(keep), "starts": [s for _, s in keep],
            "fidelity_by_horizon": fidelity_at(real, gen, c, cfg.horizons),
            "realism": realism(real[:, c:], gen, cfg.realism_steps, cfg.seed, cfg.realism_seeds)}
