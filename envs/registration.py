"""Gymnasium ids for worlds: ``worldsim/World-v0`` (any world file: ``checkpoint=PATH``) and one id per
shipped world (``worldsim/CarRacing-v0`` is the default). ``import envs`` registers them (the Gymnasium
habit: ``gymnasium.register_envs(envs)``); registering reads no file and imports no model."""

from __future__ import annotations

import re

from worldsim.shipped import known_worlds

ENV_ENTRY = "envs.worldenv.env:WorldModelEnv"
VECTOR_ENTRY = "envs.worldenv.vector_env:WorldModelVectorEnv"
DISPLAY_NAMES = {"carracing": "CarRacing"}


def env_id(world: str) -> str:
    """``carracing`` -> ``worldsim/CarRacing-v0``; other names are title-cased."""
    name = DISPLAY_NAMES.get(world) or "".join(p.title() for p in re.split(r"[^0-9A-Za-z]+", world) if p)
    return f"worldsim/{name}-v0"


def register_envs() -> list[str]:
    """Register the ids with Gymnasium (once); returns them."""
    import gymnasium as gym

    ids = {"worldsim/World-v0": {}}
    for name in sorted(set(known_worlds()) | {"carracing"}):
        ids[env_id(name)] = {"world": name}
    for i, kwargs in ids.items():
        if i not in gym.registry:
            gym.register(i, entry_point=ENV_ENTRY, vector_entry_point=VECTOR_ENTRY, kwargs=kwargs,
                         disable_env_checker=False)
    return list(ids)
