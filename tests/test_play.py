"""play.py with a dummy video driver: real key events, reset, recording, screenshots, headless video."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pygame
import pytest

from envs.games.keymaps import Keymap
from envs.play.game import Game, Side
from envs.window import Window
from envs.worldenv.env import WorldModelEnv
from worldsim.data.dataset import EpisodeDataset
from worldsim.video import read_video

ROOT = Path(__file__).resolve().parents[1]


def key(kind, name):
    pygame.event.post(pygame.event.Event(kind, key=pygame.key.key_code(name), mod=0, unicode="", scancode=0))


@pytest.fixture
def game(tiny_world, tmp_path):
    env = WorldModelEnv(tiny_world, device="cpu")
    keymap = Keymap.from_dict(env.world.source["keymap"])
    window = Window("test", (64, 64), scale=2)
    g = Game([Side("model", env, env.world.source)], keymap, fps=1000, window=window,
             record_dir=tmp_path / "rec", screenshot_dir=tmp_path / "shots", seed=0)
    yield g
    g.close()


def frames_with(game, held, n=3):
    game.seed = 0
    game.reset()
    game.held = set()
    key(pygame.KEYDOWN, held)
    out = []
    for _ in range(n):
        for event in pygame.event.get():
            game.handle(event)
        game.action = game.current_action()
        game.step(game.action)
        out.append(game.sides[0].frame)
    key(pygame.KEYUP, held)
    for event in pygame.event.get():
        game.handle(event)
    return out


def test_keys_drive_the_world(game):
    left, right = frames_with(game, "left"), frames_with(game, "right")
    assert not np.array_equal(left[-1], right[-1])
    assert frames_with(game, "left")[-1].tolist() == left[-1].tolist()  # same keys, same seed: same world
    assert game.held == set()


def test_reset_record_screenshot_and_quit_through_key_events(game, tmp_path):
    key(pygame.KEYDOWN, "f9")  # record on
    key(pygame.KEYDOWN, "up")
    game.run(max_frames=5)
    assert game.recorder.written == [] and game.steps == 5
    key(pygame.KEYDOWN, "f9")  # record off: one episode and an mp4
    key(pygame.KEYDOWN, "f12")
    key(pygame.KEYDOWN, "r")
    key(pygame.KEYDOWN, "escape")
    game.run()
    assert not game.running and game.steps == 0  # R reset the step count, Esc quit
    data = EpisodeDataset(tmp_path / "rec" / "tiny")
    ep = data.episode(0)
    assert len(ep) >= 6 and ep.truncated[-1] and (ep.actions[1:6] == 3).all()
    assert read_video(game.recorder.written[0].with_suffix(".mp4")).shape[0] == len(ep)
    assert game.screenshots[0].is_file() and game.screenshots[0].suffix == ".png"


def test_pause_and_live_sampler_keys(game):
    game.reset()
    sim = game.sides[0].env.unwrapped.core.sim
    for name, check in (("]", lambda: sim.sampler.steps == 3), ("[", lambda: sim.sampler.steps == 2),
                        ("=", lambda: sim.sampler.guidance == 1.5), ("p", lambda: game.paused),
                        ("h", lambda: not game.show_hud)):
        key(pygame.KEYDOWN, name)
        for event in pygame.event.get():
            game.handle(event)
        assert check(), name
    assert any("sampling steps" in line for line in game.hud())


def run_play(*args, timeout=300, env=None):
    return subprocess.run([sys.executable, "play.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_headless_writes_a_video_of_the_requested_length(tiny_world, tmp_path):
    out = tmp_path / "out.mp4"
    proc = run_play("--checkpoint", str(tiny_world), "--headless", "--frames", "12", "--record", str(out),
                    "--device", "cpu", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    assert read_video(out).shape[0] == 12


def test_compare_runs_the_real_env_beside_the_model(tiny_world, tmp_path):
    out = tmp_path / "cmp.mp4"
    proc = run_play("--checkpoint", str(tiny_world), "--compare", "--headless", "--frames", "4", "--record", str(out),
                    "--policy", "random", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert read_video(out).shape[2] == 2 * read_video(out).shape[1]  # two frames side by side


def test_clear_errors(tmp_path):
    proc = run_play("--checkpoint", str(tmp_path / "none.safetensors"))
    assert proc.returncode == 2 and "python train.py" in proc.stderr
    proc = run_play("--world", "atlantis")
    assert proc.returncode == 2 and "known worlds" in proc.stderr


@pytest.mark.parametrize("driver", [None, "no-such-driver"])
def test_no_display_suggests_headless(tiny_world, driver):
    """No display: SDL unset falls back to its offscreen driver (an invisible window) -> exit 2 with the hint."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY")}
    if driver:
        env["SDL_VIDEODRIVER"] = driver
    proc = run_play("--checkpoint", str(tiny_world), "--device", "cpu", env=env)
    assert proc.returncode == 2 and "--headless" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_attend_plays_a_shorter_window_and_refuses_a_longer_one(tiny_world, tmp_path):
    """--attend N: each frame attends to N frames (faster); the video differs from the world's own window once
    the rollout outgrows N, and more frames than the world was trained with is one clear line, exit 2."""
    videos = {}
    for n in ("2", "4"):
        out = tmp_path / f"w{n}.mp4"
        proc = run_play("--checkpoint", str(tiny_world), "--headless", "--frames", "8", "--record", str(out),
                        "--device", "cpu", "--seed", "0", "--attend", n)
        assert proc.returncode == 0, proc.stderr
        videos[n] = read_video(out)
    assert videos["2"].shape == videos["4"].shape and not np.array_equal(videos["2"], videos["4"])
    proc = run_play("--checkpoint", str(tiny_world), "--headless", "--frames", "2", "--device", "cpu", "--attend", "9")
    assert proc.returncode == 2 and "longer than the 4 frames" in proc.stderr, proc.stderr
