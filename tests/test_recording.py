"""Recording wrappers: episodes land in the training format, atomically, and survive interruptions."""

import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs.recording.episodes import RecordEpisodes, RecordEpisodesVector
from envs.worldenv.env import WorldModelEnv
from envs.worldenv.vector_env import WorldModelVectorEnv
from worldsim.data.dataset import ClipDataset, EpisodeDataset
from worldsim.data.episodes import DatasetError
from worldsim.video import read_video

ROOT = Path(__file__).resolve().parents[1]


def test_world_env_round_trip_with_videos(tiny_world, tmp_path):
    env = RecordEpisodes(WorldModelEnv(tiny_world, device="cpu", max_episode_steps=3), tmp_path, video=True)
    seen = []
    for ep in range(2):
        obs, _ = env.reset(seed=ep)
        frames, actions = [obs], []
        for t in range(3):
            a = (t + ep) % 5
            obs, *_ = env.step(a)
            frames.append(obs)
            actions.append(a)
        seen.append((frames, actions))
    env.reset(seed=9)
    env.step(1)
    env.close()  # the episode in flight is kept, marked truncated
    data = EpisodeDataset(tmp_path)
    assert len(data) == 3 and [r.length for r in data.refs] == [4, 4, 2]
    for i, (frames, actions) in enumerate(seen):
        ep = data.episode(i)
        np.testing.assert_array_equal(ep.frames, np.stack(frames))
        assert ep.actions[1:].tolist() == actions and ep.truncated[-1] and not ep.truncated[:-1].any()
        assert ep.info["index"] == i and ep.info["seed"] == i
    assert data.episode(2).truncated[-1] and data.source["world"] == "tiny"
    video = read_video(tmp_path / "ep0000000-0000000.mp4")
    assert video.shape[0] == 4
    assert len(ClipDataset(data, 2, "all")) > 0  # usable as training data
    # A second session appends after what is there.
    env = RecordEpisodes(WorldModelEnv(tiny_world, device="cpu", max_episode_steps=1), tmp_path)
    env.reset(seed=0)
    env.step(0)
    assert EpisodeDataset(tmp_path).episode(3).info["index"] == 3
    env.close()


def test_vector_recording(tiny_world, tmp_path):
    venv = RecordEpisodesVector(WorldModelVectorEnv(2, tiny_world, device="cpu", max_episode_steps=2), tmp_path)
    venv.reset(seed=0)
    for _ in range(5):  # episode, episode, reset step, episode, episode
        venv.step(np.array([1, 2]))
    venv.reset(options={"reset_mask": np.array([True, False])})
    venv.close()
    data = EpisodeDataset(tmp_path)
    lengths = sorted(r.length for r in data.refs)
    assert lengths == [3, 3, 3, 3]
    assert {tuple(data.episode(i).actions[1:]) for i in range(4)} == {(1, 1), (2, 2)}


INTERRUPTED = """
import os, signal, sys
sys.path.insert(0, {root!r})
from envs.recording.episodes import RecordEpisodes
from envs.games.source import SourceGame, SourceConfig

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started in the background
signal.signal(signal.SIGHUP, signal.SIG_DFL)  # likewise (a test run under nohup inherits SIGHUP ignored)
world = SourceGame(SourceConfig(max_episode_steps=1000))
env = world.make_env()
env = RecordEpisodes(env, {out!r}, source=world.describe(env))
env.reset(seed=0)
for t in range(12):
    env.step(3)
    if t == 7:
        os.kill(os.getpid(), signal.{sig})  # Ctrl-C, a kill or a closed terminal in the middle of an episode
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_real_env_recording_survives_ctrl_c_and_kill(tmp_path, sig):
    script = tmp_path / "rec.py"
    script.write_text(INTERRUPTED.format(root=str(ROOT), out=str(tmp_path / "data"), sig=sig))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    if sig == "SIGINT":
        assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
    else:  # exits as a shell reports a signal, after writing the episode
        assert proc.returncode == 128 + getattr(signal, sig), proc.stderr
    data = EpisodeDataset(tmp_path / "data")
    ep = data.episode(0)
    assert len(ep) == 9 and ep.truncated[-1] and (ep.actions[1:] == 3).all()
    assert data.source["env_id"] == "CarRacing-v3" and not list((tmp_path / "data").glob(".*tmp*"))


def test_bad_recordings_are_refused(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="FrameObservation"):
        RecordEpisodes(gym.make("CartPole-v1"), tmp_path / "cartpole")
    env = RecordEpisodes(WorldModelEnv(tiny_world, device="cpu"), tmp_path / "a")
    env.reset(seed=0)
    env.step(0)
    env.close()
    other = dict(env.writer.source, action_space={"type": "Discrete", "n": 3, "start": 0})
    with pytest.raises(DatasetError, match="record into another folder"):
        RecordEpisodes(WorldModelEnv(tiny_world, device="cpu"), tmp_path / "a", source=other)
