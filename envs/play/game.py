"""The game loop behind play.py: keyboard in, frames out, at the world's frame rate.

A game drives one or two *sides* with the same action each frame: the world model
(a :class:`~envs.worldenv.env.WorldModelEnv`), the real source env, or both side by side
(``--compare``). Held keys are tracked from key events (so posted events work too),
mapped to an action by the world's keymap every frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs.games.keymaps import Keymap
from envs.play.hud import FpsMeter, HudState, hud_lines
from envs.recording.episodes import EpisodeBuffer, EpisodeWriter, describe_env
from envs.worldenv.env import WorldModelEnv
from worldsim.engine.sampler import clamp_steps
from worldsim.integrity import atomic_path, publish

CONTROL_KEYS = {"escape": "quit", "r": "reset", "p": "pause", "h": "hud", "f9": "record", "f12": "screenshot",
                "[": "fewer_steps", "]": "more_steps", "-": "less_guidance", "=": "more_guidance"}


@dataclass
class Side:
    """One env shown in the window."""

    name: str
    env: gym.Env
    source: dict[str, Any]
    frame: np.ndarray | None = None
    reward: float = 0.0
    done: bool = False

    @property
    def is_model(self) -> bool:
        return isinstance(self.env.unwrapped, WorldModelEnv)


class Recorder:
    """Toggled recording of the first side: an episode shard plus an mp4 per recording."""

    def __init__(self, out: Path, source: dict[str, Any], space: gym.Space) -> None:
        self.out, self.source, self.space = out, source, space
        self.buffer: EpisodeBuffer | None = None
        self.written: list[Path] = []

    @property
    def on(self) -> bool:
        return self.buffer is not None

    def start(self, frame: np.ndarray) -> None:
        self.buffer = EpisodeBuffer(frame, self.space, {"recorded_by": "play.py"})

    def add(self, frame, action, reward, terminated, truncated) -> None:
        if self.buffer is not None:
            self.buffer.add(frame, action, reward, terminated, truncated)

    def stop(self) -> Path | None:
        buf, self.buffer = self.buffer, None
        if buf is None or len(buf.frames) < 2:
            return None
        path = EpisodeWriter(self.out, self.source, video=True).write(buf.episode(cut=True))
        self.written.append(path)
        return path


class Game:
    """Runs sides with one keymap; ``window=None`` runs headless with a policy instead of the keyboard."""

    def __init__(self, sides: list[Side], keymap: Keymap, fps: float, window=None, policy=None,
                 record_dir: str | Path = "recordings", screenshot_dir: str | Path = "screenshots",
                 seed: int | None = None, device: str = "cpu") -> None:
        self.sides, self.keymap, self.fps, self.window, self.policy = sides, keymap, fps, window, policy
        self.record_dir, self.screenshot_dir = Path(record_dir), Path(screenshot_dir)
        self.seed, self.device = seed, device
        self.held: set[str] = set()
        self.running, self.paused, self.show_hud = True, False, True
        self.steps, self.action = 0, keymap.default
        self.meter = FpsMeter()
        first = sides[0]
        # F9 records the first side: generated frames (labelled with their world file) and real play go to
        # separate folders, so the two never mix in one dataset.
        name = first.source.get("world", "world")
        source, folder = (describe_env(first.env), name) if first.is_model else (first.source, f"{name}-real")
        self.recorder = Recorder(self.record_dir / folder, source, first.env.action_space)
        self.screenshots: list[Path] = []
        self.notes: list[tuple[float, str]] = []

    # -- sides --------------------------------------------------------------------------
    def reset(self) -> None:
        """A new start for every side. With two sides the model starts from the real env's frames."""
        seed = self.seed
        for side in self.sides:
            side.done, side.reward = False, 0.0
        real = [s for s in self.sides if not s.is_model]
        models = [s for s in self.sides if s.is_model]
        options = None
        if real:
            frames, actions = self._real_start(real[0], seed)
            options = {"frames": frames, "actions": actions} if models else None
        for side in models:
            side.frame = side.env.reset(seed=seed, options=options)[0]
        self.seed = None if seed is None else seed + 1
        self.steps = 0
        if self.policy is not None and hasattr(self.policy, "reset"):
            self.policy.reset(self.sides[0].env)
        if self.recorder.on:
            self.recorder.stop()
            self.recorder.start(self.sides[0].frame)
        self.meter.reset()

    def _real_start(self, side: Side, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Reset the real env; skip its intro (CarRacing zooms in for 50 frames) and keep the last frames
        as the context the world model starts from."""
        obs, _ = side.env.reset(seed=seed)
        skip = 50 if side.source.get("kind") == "carracing" else 0
        frames, actions = [obs], [self.keymap.default]
        for _ in range(skip):
            obs, *_ = side.env.step(self.keymap.default)
            frames.append(obs)
            actions.append(self.keymap.default)
        side.frame = obs
        return np.stack(frames[-8:]), np.asarray(actions[-8:])

    def step(self, action) -> None:
        for i, side in enumerate(self.sides):
            if side.done:  # an ended side waits for R (or the automatic reset below)
                continue
            obs, reward, terminated, truncated, _ = side.env.step(action)
            side.frame, side.reward, side.done = obs, float(reward), bool(terminated or truncated)
            if i == 0:
                self.recorder.add(obs, action, reward, terminated, truncated)
        self.steps += 1
        if all(s.done for s in self.sides):
            self.reset()

    # -- input --------------------------------------------------------------------------
    def handle(self, event) -> None:
        import pygame

        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.KEYDOWN:
            name = pygame.key.name(event.key)
            self.held.add(name)
            command = CONTROL_KEYS.get(name)
            if command:
                self.command(command)
        elif event.type == pygame.KEYUP:
            self.held.discard(pygame.key.name(event.key))

    def command(self, command: str) -> None:
        if command == "quit":
            self.running = False
        elif command == "reset":
            self.reset()
        elif command == "pause":
            self.paused = not self.paused
            self.meter.reset()
        elif command == "hud":
            self.show_hud = not self.show_hud
        elif command == "record":
            if self.recorder.on:
                path = self.recorder.stop()
                self.note(f"saved {path}" if path else "nothing recorded")
            else:
                self.recorder.start(self.sides[0].frame)
                self.note(f"recording into {self.recorder.out}")
        elif command == "screenshot":
            self.note(f"wrote {self.screenshot()}")
        elif command in ("fewer_steps", "more_steps", "less_guidance", "more_guidance"):
            self.tune(command)

    def tune(self, command: str) -> None:
        for side in self.sides:
            if side.is_model:
                world, s = side.env.unwrapped, side.env.unwrapped.sampler
                if command.endswith("steps"):
                    if world.core.sim.dit.cfg.commit == "draft":
                        self.note("this world makes each frame in one step (commit=draft)")
                        continue
                    world.retune(steps=clamp_steps(s.steps + (1 if command == "more_steps" else -1)))
                else:
                    world.retune(guidance=max(1.0, s.guidance + (0.5 if command == "more_guidance" else -0.5)))

    def note(self, text: str) -> None:
        print(text, flush=True)
        self.notes.append((time.perf_counter() + 3.0, text))

    def screenshot(self) -> Path:
        """The current frames side by side as a PNG (the window's pixels when there is one)."""
        import pygame

        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.screenshot_dir / f"{self.sides[0].source.get('world', 'world')}-{time.strftime('%Y%m%d-%H%M%S')}-{self.steps}.png"
        tmp = atomic_path(path)
        if self.window is not None:
            pygame.image.save(self.window.screen, str(tmp))
        else:
            img = np.concatenate([s.frame for s in self.sides], axis=1)
            pygame.image.save(pygame.surfarray.make_surface(img.transpose(1, 0, 2)), str(tmp))
        publish(tmp, path)
        self.screenshots.append(path)
        return path

    # -- the loop -----------------------------------------------------------------------
    def current_action(self):
        if self.policy is not None:
            return self.policy(self.sides[0].frame)
        return self.keymap.action_for(self.held)

    def action_name(self, action) -> str:
        for keys, a in self.keymap.bindings:
            if a == action:
                return "+".join(keys)
        return "none" if action == self.keymap.default else str(action)

    def hud(self) -> list[str]:
        model = next((s for s in self.sides if s.is_model), None)
        sampler = model.env.unwrapped.sampler if model else None
        now = time.perf_counter()
        self.notes = [(t, n) for t, n in self.notes if t > now]
        state = HudState(
            world=" | ".join(s.name for s in self.sides), target_fps=self.fps, fps=self.meter.fps,
            model_ms=model.env.unwrapped.model_ms if model else None, step=self.steps,
            action=self.action_name(self.action), reward=self.sides[0].reward,
            sampling_steps=sampler.steps if sampler else None, guidance=sampler.guidance if sampler else None,
            device=self.device, paused=self.paused, recording=self.recorder.on, notes=[n for _, n in self.notes],
        )
        return hud_lines(state)

    def run(self, max_frames: int | None = None, video: list | None = None) -> None:
        """Play until Esc / window close (or ``max_frames`` frames). ``video`` collects the shown frames."""
        import pygame

        clock = pygame.time.Clock() if self.window is not None else None
        if self.sides[0].frame is None:
            self.reset()
        frames = 0
        while self.running and (max_frames is None or frames < max_frames):
            if self.window is not None:
                for event in pygame.event.get():
                    self.handle(event)
            if not self.running:
                break
            if not self.paused:
                self.action = self.current_action()
                self.step(self.action)
                frames += 1
            self.meter.tick()
            shown = [s.frame for s in self.sides]
            if video is not None and not self.paused:
                video.append(np.concatenate(shown, axis=1))
            if self.window is not None:
                self.window.show(shown, self.hud() if self.show_hud else None)
                clock.tick(self.fps)

    def close(self) -> None:
        """Save a recording in progress, close the envs and the window."""
        if self.recorder.on:
            path = self.recorder.stop()
            if path:
                print(f"saved {path}")
        for side in self.sides:
            side.env.close()
        if self.window is not None:
            self.window.close()

