"""Boxing (ALE/Boxing-v5): a data policy that fights, so the data holds punches that land both ways.

A random policy wanders and lands a few lucky punches; the CPU boxer beats it by tens of points and the data
shows little of what the game is about. This driver reads both boxers' positions from the console RAM
(privileged, like CarRacing's driver reading the track), closes in, lines up and punches, with a per-episode
skill (reach it keeps, aim, punch rate, reaction) and human lapses: it backs off, circles, holds random keys
and idles, so every action's effect and both boxers' punches are in the data.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

RAM_PLAYER_X, RAM_ENEMY_X, RAM_PLAYER_Y, RAM_ENEMY_Y = 32, 33, 34, 35
"""The white (player) and black (CPU) boxers' positions in the console RAM."""

MEANINGS = ("NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
            "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE",
            "DOWNLEFTFIRE")
"""Boxing's full 18-action set, in ALE's order."""


def is_boxing(env_id: str) -> bool:
    return "boxing" in env_id.lower()


def action(dx: int, dy: int, fire: bool) -> int:
    """A direction (-1, 0, 1 each; y grows downwards) and the punch button -> the ALE action index."""
    name = {-1: "UP", 0: "", 1: "DOWN"}[dy] + {-1: "LEFT", 0: "", 1: "RIGHT"}[dx]
    name = name + "FIRE" if fire else name
    return MEANINGS.index(name or "NOOP")


class BoxingDriver:
    """Fights the CPU boxer, with a skill drawn per episode and lapses.

    Modes, switched at random: ``fight`` (stand at a horizontal reach from the opponent, a few rows above or
    below it, where punches land, and punch when lined up), ``back`` (step away from the opponent), ``burst``
    (hold one random action) and ``idle`` (let go of the keys).
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def reset(self, env: gym.Env) -> None:
        self.ale = env.unwrapped.ale
        r = self.rng
        self.reach = r.uniform(12.0, 20.0)
        self.aim = r.uniform(8.0, 14.0)  # punches land off the opponent's row (measured: 7-14 above or below)
        self.above = bool(r.random() < 0.5)
        self.switch = r.uniform(0.01, 0.05)  # per-step chance to go for the other side
        self.dead_zone = r.uniform(1.0, 4.0)
        self.punch = r.uniform(0.6, 1.0)  # chance to punch per step when lined up
        self.eps = r.uniform(0.03, 0.12)
        self.lapse = r.uniform(0.005, 0.03)
        self.mode, self.mode_left, self.held = "fight", 0, 0

    def _positions(self) -> tuple[int, int, int, int]:
        """Player x, y and opponent x, y from the RAM."""
        ram = self.ale.getRAM()
        return tuple(int(ram[i]) for i in (RAM_PLAYER_X, RAM_PLAYER_Y, RAM_ENEMY_X, RAM_ENEMY_Y))

    def _fight(self) -> int:
        px, py, ex, ey = self._positions()
        side = -1 if px <= ex else 1  # the player's side of the opponent
        if self.rng.random() < self.switch:
            self.above = not self.above
        tx, ty = ex + side * self.reach, ey + (-self.aim if self.above else self.aim)
        ex_, ey_ = tx - px, ty - py
        dx = 0 if abs(ex_) < self.dead_zone else int(np.sign(ex_))
        dy = 0 if abs(ey_) < self.dead_zone else int(np.sign(ey_))
        lined = 5 <= abs(py - ey) <= 16 and abs(px - ex) < self.reach + 6
        return action(dx, dy, lined and self.rng.random() < self.punch)

    def _back(self) -> int:
        px, py, ex, ey = self._positions()
        return action(-1 if px <= ex else 1, int(np.sign(py - ey)) if abs(py - ey) > 2 else 0, False)

    def __call__(self, obs) -> int:
        r = self.rng
        if self.mode != "fight" and self.mode_left <= 0:
            self.mode = "fight"
        if self.mode == "fight" and r.random() < self.lapse:
            u = r.random()
            if u < 0.3:
                self.mode, self.mode_left = "back", int(r.integers(4, 16))
            elif u < 0.75:
                self.mode, self.mode_left, self.held = "burst", int(r.integers(3, 20)), int(r.integers(18))
            else:
                self.mode, self.mode_left, self.held = "idle", int(r.integers(5, 25)), int(r.choice([0, 1]))
        if self.mode == "back":
            self.mode_left -= 1
            return self._back()
        if self.mode != "fight":
            self.mode_left -= 1
            return self.held
        if r.random() < self.eps:
            return int(r.integers(18))
        return self._fight()
