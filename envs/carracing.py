"""CarRacing-v3 (discrete, 5 actions): the env, its keymap and a driving data policy.

Random actions leave the car spinning on the grass, so the data policy drives:
it follows the track centre line (from the env's own track geometry) with a
per-episode speed and lookahead, and mixes in what a human player does —
random manoeuvres, bursts of one key, drifting off the road and recovering.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from .keymaps import Keymap

NOOP, LEFT, RIGHT, GAS, BRAKE = range(5)
ZOOM_FRAMES = 50
"""The env zooms in during its first second (50 frames); start contexts should come after it."""


def make(env_id: str, render_mode: str | None, **kwargs) -> gym.Env:
    kwargs.setdefault("continuous", False)
    if kwargs["continuous"]:
        raise ValueError("world kind 'carracing' records the discrete env; set world.env_kwargs.continuous=false")
    return gym.make(env_id, render_mode=render_mode, **kwargs)


def keymap() -> Keymap:
    # The discrete env takes one action per step, so no combinations exist.
    return Keymap("carracing", [(("left",), LEFT), (("right",), RIGHT), (("up",), GAS), (("down",), BRAKE)], NOOP)


class DrivingPolicy:
    """Track-following controller with noise, manoeuvres and off-road excursions.

    Modes, switched at random: ``drive`` (follow the centre line at a target
    speed, with a small chance of a random action each step), ``burst`` (hold
    one random action for a while: hard turns, braking, full gas, coasting) and
    ``wander`` (steer steadily to one side, usually off the road, then the
    controller takes over again and recovers).
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def reset(self, env: gym.Env) -> None:
        self.env = env.unwrapped
        track = np.asarray(self.env.track, dtype=np.float64)
        self.points = track[:, 2:4]
        self.nearest = 0
        r = self.rng
        self.target_speed = r.uniform(25.0, 75.0)
        self.lookahead = int(r.integers(4, 9))
        self.eps = r.uniform(0.02, 0.12)
        self.turn_threshold = r.uniform(0.05, 0.2)
        self.mode, self.mode_left, self.held = "drive", 0, NOOP

    def _steer_error(self) -> tuple[float, float]:
        car = self.env.car.hull
        pos = np.array([car.position[0], car.position[1]])
        # Nearest centre-line point, searched around the last one (the track is a loop).
        n = len(self.points)
        window = (self.nearest + np.arange(-10, 30)) % n
        d = np.linalg.norm(self.points[window] - pos, axis=1)
        if d.min() > 30.0:  # lost (far off the road): search the whole track
            window = np.arange(n)
            d = np.linalg.norm(self.points - pos, axis=1)
        self.nearest = int(window[int(d.argmin())])
        target = self.points[(self.nearest + self.lookahead) % n] - pos
        heading = np.array([-math.sin(car.angle), math.cos(car.angle)])
        cross = heading[0] * target[1] - heading[1] * target[0]
        err = math.atan2(cross, float(heading @ target))  # > 0: target is counter-clockwise
        speed = math.hypot(*car.linearVelocity)
        return err, speed

    def _drive(self) -> int:
        err, speed = self._steer_error()
        if abs(err) > self.turn_threshold:
            # Turn (action LEFT turns clockwise in world coordinates); slow down for sharp turns.
            if speed > 0.6 * self.target_speed and abs(err) > 0.6:
                return BRAKE
            return RIGHT if err > 0 else LEFT
        if speed < self.target_speed:
            return GAS
        if speed > 1.2 * self.target_speed:
            return BRAKE
        return NOOP

    def __call__(self, obs) -> int:
        r = self.rng
        if self.mode_left <= 0 and self.mode != "drive":
            self.mode = "drive"
        if self.mode == "drive":
            u = r.random()
            if u < 0.006:
                self.mode, self.mode_left = "burst", int(r.integers(5, 25))
                self.held = int(r.choice([NOOP, LEFT, RIGHT, GAS, BRAKE], p=[0.15, 0.25, 0.25, 0.2, 0.15]))
            elif u < 0.009:
                self.mode, self.mode_left = "wander", int(r.integers(15, 45))
                self.held = int(r.choice([LEFT, RIGHT]))
        if self.mode == "burst":
            self.mode_left -= 1
            return self.held
        if self.mode == "wander":
            self.mode_left -= 1
            # Mostly the chosen turn, with gas so the car actually leaves the road.
            return self.held if r.random() < 0.6 else GAS
        action = self._drive()
        if r.random() < self.eps:
            return int(r.integers(5))
        return action
