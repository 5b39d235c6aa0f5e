"""The shipped worlds: the world files in ``checkpoints/`` next to the ``worldsim`` package."""

from __future__ import annotations

from pathlib import Path


def checkpoints_dir() -> Path:
    """The folder of shipped worlds: ``checkpoints/`` next to the ``worldsim`` package."""
    return Path(__file__).resolve().parent.parent / "checkpoints"


def known_worlds(folder: str | Path | None = None) -> list[str]:
    """Names of the worlds in ``folder`` (default: the shipped ones)."""
    folder = Path(folder) if folder is not None else checkpoints_dir()
    # Agents trained in a world ship beside it as <world>-agent.safetensors; they are not worlds.
    return sorted(p.stem for p in folder.glob("*.safetensors") if not p.stem.endswith("-agent")) if folder.is_dir() else []
