"""Gymnasium ids for worlds: ``worldsim/World-v0`` (any world file: ``checkpoint=PATH``) and one id per
shipped world (``worldsim/CarRacing-v0`` is the default). Registering reads no file and imports no model."""

from __future__ import annotations

import re
from pathlib import Path

ENV_ENTRY = "envs.world_env:WorldModelEnv"
VECTOR_ENTRY = "envs.world_vector_env:WorldModelVectorEnv"
DISPLAY_NAMES = {"carracing": "CarRacing"}


def checkpoints_dir() -> Path:
    """The folder of shipped worlds: ``checkpoints/`` next to the ``worldsim`` package."""
    return Path(__file__).resolve().parent.parent / "checkpoints"


def known_worlds(folder: str | Path | None = None) -> list[str]:
    """Names of the worlds in ``folder`` (default: the shipped ones)."""
    folder = Path(folder) if folder is not None else checkpoints_dir()
    # Agents trained in a world ship beside it as <world>-agent.safetensors; they are not worlds.
    return sorted(p.stem for p in folder.glob("*.safetensors") if not p.stem.endswith("-agent")) if folder.is_dir() else []


def env_id(world: str) -> str:
    """``carracing`` -> ``worldsim/CarRacing-v0``; other names are title-cased."""
    name = DISPLAY_NAMES.get(world) or "".join(p.title() for p in re.split(r"[^0-9A-Za-z]+", world) if p)
    return f"worldsim/{name}-v0"


def register_envs() -> list[str]:
    """Register the ids with Gymnasium (once); returns them."""
    try:
        import gymnasium as gym
    except ImportError:  # gymnasium is a dependency, but the library must import without it
        return []
    ids = {"worldsim/World-v0": {}}
    for name in sorted(set(known_worlds()) | {"carracing"}):
        ids[env_id(name)] = {"world": name}
    for i, kwargs in ids.items():
        if i not in gym.registry:
            gym.register(i, entry_point=ENV_ENTRY, vector_entry_point=VECTOR_ENTRY, kwargs=kwargs,
                         disable_env_checker=False)
    return list(ids)
