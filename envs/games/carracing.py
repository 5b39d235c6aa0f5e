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

from envs.games.keymaps import Keymap

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

    ``frame_skip``: the policy is asked once per ``frame_skip`` game frames (a world recorded at a frame
    skip); manoeuvres then start that much more often per decision and last that many fewer decisions, so
    they cover the same share of the game's time as at one decision per frame.
    """

    def __init__(self, rng: np.random.Generator, frame_skip: int = 1) -> None:
        self.rng = rng
        self.skip = frame_skip

    def _decisions(self, frames: int) -> int:
        return max(1, round(frames / self.skip))

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
            if u < 0.006 * self.skip:
                self.mode, self.mode_left = "burst", self._decisions(int(r.integers(5, 25)))
                self.held = int(r.choice([NOOP, LEFT, RIGHT, GAS, BRAKE], p=[0.15, 0.25, 0.25, 0.2, 0.15]))
            elif u < 0.009 * self.skip:
                self.mode, self.mode_left = "wander", self._decisions(int(r.integers(15, 45)))
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


class PursuitDriver:
    """A second, different CarRacing driver, for measuring a world under actions its data never saw.

    Pure pursuit: it steers towards the centre-line point a speed-dependent distance ahead (not a fixed number
    of track points), plans its speed from the track's curvature ahead (slowing before bends, not after), keeps
    a per-episode line offset from the centre, and has none of the data policy's bursts, wanders or random
    actions — so its key statistics (long gas phases, early braking, short steering taps) differ from the
    data policy's.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def reset(self, env: gym.Env) -> None:
        self.env = env.unwrapped
        self.points = np.asarray(self.env.track, dtype=np.float64)[:, 2:4]
        self.nearest = 0
        r = self.rng
        self.v_max, self.v_min = r.uniform(45.0, 90.0), r.uniform(18.0, 30.0)
        self.gain = r.uniform(0.35, 0.6)  # lookahead metres per unit of speed
        self.offset = r.uniform(-2.5, 2.5)  # drives left or right of the centre line
        self.deadband = r.uniform(0.03, 0.08)

    def _state(self) -> tuple[np.ndarray, float, np.ndarray]:
        car = self.env.car.hull
        pos = np.array([car.position[0], car.position[1]])
        n = len(self.points)
        window = (self.nearest + np.arange(-10, 40)) % n
        d = np.linalg.norm(self.points[window] - pos, axis=1)
        if d.min() > 30.0:
            window, d = np.arange(n), np.linalg.norm(self.points - pos, axis=1)
        self.nearest = int(window[int(d.argmin())])
        heading = np.array([-math.sin(car.angle), math.cos(car.angle)])
        return pos, math.hypot(*car.linearVelocity), heading

    def _ahead(self, metres: float) -> int:
        """Index of the centre-line point about ``metres`` ahead of the nearest one."""
        n, i, run = len(self.points), self.nearest, 0.0
        while run < metres:
            j = (i + 1) % n
            run += float(np.linalg.norm(self.points[j] - self.points[i]))
            i = j
            if i == self.nearest:
                break
        return i

    def __call__(self, obs) -> int:
        pos, speed, heading = self._state()
        n = len(self.points)
        k = self._ahead(4.0 + self.gain * speed)
        tangent = self.points[(k + 1) % n] - self.points[k]
        normal = np.array([-tangent[1], tangent[0]]) / max(np.linalg.norm(tangent), 1e-6)
        target = self.points[k] + self.offset * normal - pos
        cross = heading[0] * target[1] - heading[1] * target[0]
        err = math.atan2(cross, float(heading @ target))
        # Curvature ahead: the turn of the track over the next ~40 m sets the speed to hold.
        a, b = self._ahead(10.0), self._ahead(40.0)
        t1, t2 = self.points[(a + 1) % n] - self.points[a], self.points[(b + 1) % n] - self.points[b]
        bend = abs(math.atan2(t1[0] * t2[1] - t1[1] * t2[0], float(t1 @ t2)))
        v_target = self.v_max - (self.v_max - self.v_min) * min(1.0, bend / 1.2)
        if speed > v_target * 1.1:
            return BRAKE
        if speed < 8.0 and abs(err) < 1.0:  # steering does nothing at a standstill: get rolling first
            return GAS
        if abs(err) > self.deadband * (1 + speed / 40.0):
            return RIGHT if err > 0 else LEFT
        return GAS if speed < v_target else NOOP
