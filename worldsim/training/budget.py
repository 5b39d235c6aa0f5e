"""A wall-clock budget for training (``train.minutes``): a stage stops at it as SIGTERM stops it, saved.

A CPU session ends at a fixed time and every process with it, so training in this project advances in
bounded, saved steps: each trainer (VAE, dynamics, agent, the world-model loop) checks its budget after
every optimiser step or rollout; once it is spent the trainer writes its resumable state and its output
file and raises :class:`BudgetReached`, and the entry point prints the command that continues. A budget is
a deadline on the monotonic clock, so nested budgets (a loop round inside the process's budget) are the
earlier of two deadlines.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Settings every training stage shares (``train.*``)."""

    minutes: float | None = None
    """Wall-clock budget of this process in minutes (None: none). At the budget each stage saves, exports
    what it exports and stops; the same command continues it."""

    def validate(self) -> None:
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"train.minutes must be above 0 (or null for no budget), got {self.minutes}")


class BudgetReached(Exception):
    """A stage stopped at its time budget, its state and output saved."""

    def __init__(self, what: str, progress: str = "") -> None:
        super().__init__(f"{what}: time budget reached" + (f" at {progress}" if progress else ""))
        self.what, self.progress = what, progress


class Budget:
    """A deadline: ``Budget(minutes)`` from now, ``Budget(None)`` never ends; ``within(minutes)`` is a
    sub-budget that ends at the earlier of the two deadlines."""

    def __init__(self, minutes: float | None = None, *, deadline: float | None = None) -> None:
        if minutes is not None and deadline is not None:
            raise ValueError("give minutes or a deadline, not both")
        if minutes is not None:
            deadline = time.monotonic() + 60.0 * float(minutes)
        self.deadline = math.inf if deadline is None else float(deadline)

    @property
    def limited(self) -> bool:
        return math.isfinite(self.deadline)

    def left_s(self) -> float:
        """Seconds left (inf when unlimited, 0 once spent)."""
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def within(self, minutes: float | None) -> Budget:
        """The earlier of this deadline and ``minutes`` from now."""
        if minutes is None:
            return Budget(deadline=self.deadline)
        return Budget(deadline=min(self.deadline, time.monotonic() + 60.0 * float(minutes)))

    def left_text(self) -> str:
        """``12:34 left`` (minutes:seconds), or an empty string when unlimited."""
        if not self.limited:
            return ""
        s = int(self.left_s())
        return f"{s // 60}:{s % 60:02d} left"


UNLIMITED = Budget()
