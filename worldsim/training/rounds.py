"""Rounds of phases that resume: which phase of which round is finished, kept on disk.

A training loop of rounds (``stage=loop``: play the real game, fine-tune the world, train the agent, score
it) is stopped by a budget or a signal at any point and continued by the same command, maybe in another
session. Each finished phase leaves ``<folder>/round-<k>/<phase>.json`` (written atomically, last), with
what the phase made: a phase without its file is not done and is run again (each phase resumes or redoes
its own work); one with it is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worldsim.integrity import write_json


class Rounds:
    """The finished phases of the rounds under ``folder``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def dir(self, k: int) -> Path:
        """The folder of round ``k`` (1-based), made on first use."""
        if k < 1:
            raise ValueError(f"rounds count from 1, got {k}")
        d = self.folder / f"round-{k}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def done(self, k: int, phase: str) -> dict[str, Any] | None:
        """What phase ``phase`` of round ``k`` recorded when it finished, or None when it has not."""
        path = self.folder / f"round-{k}" / f"{phase}.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def finish(self, k: int, phase: str, info: dict[str, Any]) -> dict[str, Any]:
        """Record phase ``phase`` of round ``k`` as finished with ``info`` (atomically) -> info."""
        write_json(self.dir(k) / f"{phase}.json", info)
        return info

    def finished_rounds(self, phases: tuple[str, ...]) -> list[int]:
        """Rounds whose every phase in ``phases`` is finished, in order, stopping at the first that is not."""
        out, k = [], 1
        while all(self.done(k, p) is not None for p in phases):
            out.append(k)
            k += 1
        return out
