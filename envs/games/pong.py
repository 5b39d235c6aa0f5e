"""Pong (ALE/Pong-v5): a data policy that plays, so the data reaches the game's later states.

A random policy loses 0-21 without ever returning the ball, so its data shows the opponent scoring and
little else. This driver reads the ball and paddle from the console RAM (privileged, like CarRacing's
driver reading the track) and moves its paddle to meet the ball, with a per-episode skill (reaction,
dead zone, aim offset, mistakes) so that episodes range from lost to won and every score is seen; it also
holds random keys for a while and idles, as people do, so every action's effect is in the data.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.games.keymaps import Keymap

NOOP, FIRE, UP, DOWN, UPFIRE, DOWNFIRE = range(6)
"""Pong's minimal action set; ALE calls up RIGHT and down LEFT (the paddle sits on the right)."""

RAM_PADDLE_Y, RAM_BALL_Y = 51, 54
BALL_TO_PADDLE = 6
"""RAM ball y minus RAM paddle y when the ball meets the paddle's centre (measured on the screen)."""


def is_pong(env_id: str) -> bool:
    return "pong" in env_id.lower()


def keymap(name: str) -> Keymap:
    """Up and down arrows move the paddle up and down (ALE's RIGHT and LEFT, which are kept as aliases);
    space serves (FIRE), and combines with either arrow."""
    bindings = [(("up",), UP), (("down",), DOWN), (("right",), UP), (("left",), DOWN), (("space",), FIRE),
                (("space", "up"), UPFIRE), (("down", "space"), DOWNFIRE),
                (("right", "space"), UPFIRE), (("left", "space"), DOWNFIRE)]
    return Keymap(name, bindings, default=NOOP)


class PongDriver:
    """Meets the ball with its paddle, with a skill drawn per episode and human-like lapses.

    Modes, switched at random: ``track`` (move towards where the ball is, plus an aim offset drawn per rally
    so returns leave at different angles), ``burst`` (hold one random action), ``idle`` (let go of the keys).
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def reset(self, env: gym.Env) -> None:
        self.ale = env.unwrapped.ale
        r = self.rng
        self.dead_zone = r.uniform(1.0, 5.0)
        self.eps = r.uniform(0.02, 0.1)
        self.lapse = r.uniform(0.003, 0.02)  # per-step chance of a burst or idle spell
        self.lag = int(r.integers(0, 2))  # reacts to where the ball was this many steps ago
        self.lead = r.uniform(0.0, 1.0)
        self.history: list[int] = []
        self.aim = 0.0
        self.mode, self.mode_left, self.held = "track", 0, NOOP

    def _track(self) -> int:
        ram = self.ale.getRAM()
        ball_y, paddle_y = int(ram[RAM_BALL_Y]), int(ram[RAM_PADDLE_Y])
        self.history.append(ball_y)
        self.history = self.history[-(self.lag + 2):]
        seen = self.history[-1 - self.lag] if len(self.history) > self.lag else 0
        if seen and len(self.history) > 1 and self.history[-2]:  # lead the ball by its vertical speed
            seen = seen + self.lead * (self.history[-1] - self.history[-2])
        if seen == 0:  # no ball on the screen (between points): new rally, new aim, drift to the middle
            self.aim = self.rng.uniform(-6.0, 6.0)
            seen = 125
        err = (seen - BALL_TO_PADDLE + self.aim) - paddle_y
        if abs(err) < self.dead_zone:
            return NOOP
        return DOWN if err > 0 else UP

    def __call__(self, obs) -> int:
        r = self.rng
        if self.mode != "track" and self.mode_left <= 0:
            self.mode = "track"
        if self.mode == "track" and r.random() < self.lapse:
            if r.random() < 0.6:
                self.mode, self.mode_left, self.held = "burst", int(r.integers(3, 20)), int(r.integers(6))
            else:
                self.mode, self.mode_left, self.held = "idle", int(r.integers(5, 30)), int(r.choice([NOOP, FIRE]))
        if self.mode != "track":
            self.mode_left -= 1
            self._track()  # keeps the ball history current
            return self.held
        action = self._track()
        if r.random() < self.eps:
            return int(r.integers(6))
        if action != NOOP and r.random() < 0.1:  # the fire variants move the paddle the same way
            action = UPFIRE if action == UP else DOWNFIRE
        return action
