from pathlib import Path

import numpy as np
import pytest

from envs.games.keymaps import atari_keymap
from envs.games.source import SourceConfig, SourceGame
from envs.recording.collect import CollectConfig, collect, run_episode
from worldsim.data.dataset import EpisodeDataset
from worldsim.data.episodes import DatasetError


def test_carracing_collection_resumes_without_duplicates(carracing_data, tmp_path):
    data = EpisodeDataset(carracing_data)
    assert data.num_frames >= 100 and data.indices() == set(range(len(data)))
    src = data.source
    assert src["env_id"] == "CarRacing-v3" and src["frame_size"] == 64 and src["fps"] == 50
    assert src["action_space"] == {"type": "Discrete", "n": 5, "start": 0} and src["policy"] == "driver"
    ep = data.episode(0)
    assert ep.frames.shape[1:] == (64, 64, 3) and ep.frames.dtype == np.uint8
    assert ep.actions[0] == 0 and ep.rewards[0] == 0 and ep.truncated[-1]

    # Copy, simulate a run killed mid-shard, then resume to a larger size.
    import shutil

    out = tmp_path / "d"
    shutil.copytree(carracing_data, out)
    before = {p.name: p.read_bytes() for p in out.glob("*.safetensors")}
    (out / ".ep0000004-0000005.123.tmp.safetensors").write_bytes(b"half a shard")
    world = SourceConfig(max_episode_steps=24)
    grown = collect(world, CollectConfig(out=str(out), frames=200, workers=2, progress=False))
    assert grown.num_frames >= 200
    indices = [r.index for r in grown.refs]
    assert sorted(indices) == list(range(len(indices)))  # no duplicates, no gaps
    assert all((out / n).read_bytes() == b for n, b in before.items())  # old shards untouched
    assert not list(out.glob(".*"))
    # Nothing to do at the same target; episodes are deterministic in their index.
    again = collect(world, CollectConfig(out=str(out), frames=200, workers=2, progress=False))
    assert again.num_frames == grown.num_frames
    fresh = run_episode(SourceGame(world), SourceGame(world).make_env(), 0, 0)
    np.testing.assert_array_equal(fresh.frames, data.episode(0).frames)


def test_collection_refuses_another_source_in_the_same_folder(carracing_data, tmp_path):
    import shutil

    out = tmp_path / "d"
    shutil.copytree(carracing_data, out)
    other = SourceConfig(name="cp", kind="gym", env_id="CartPole-v1", env_kwargs={}, policy="random", max_episode_steps=10)
    with pytest.raises(DatasetError, match="another data_dir=... folder"):
        collect(other, CollectConfig(out=str(out), frames=300, progress=False))


def test_atari_breakout_collection_smoke(tmp_path):
    pytest.importorskip("ale_py")
    world = SourceConfig(name="breakout", kind="atari", env_id="ALE/Breakout-v5", env_kwargs={}, policy="random",
                        repeat_prob=0.25, max_episode_steps=30)
    data = collect(world, CollectConfig(out=str(tmp_path), frames=50, workers=1, episodes_per_shard=1, progress=False))
    assert data.num_frames >= 50 and data.source["fps"] == 15.0
    ep = data.episode(0)
    assert ep.frames.shape[1:] == (64, 64, 3) and set(np.unique(ep.actions[1:])) <= {0, 1, 2, 3}
    keymap = data.source["keymap"]
    assert [["space"], 1] in keymap["bindings"] and [["left"], 3] in keymap["bindings"]


def test_pong_driver_returns_the_ball_and_every_action_is_seen(tmp_path):
    pytest.importorskip("ale_py")
    lost = {}
    for policy in ("driver", "random"):
        world = SourceConfig(name="pong", kind="atari", env_id="ALE/Pong-v5", env_kwargs={}, policy=policy,
                            max_episode_steps=600)
        data = collect(world, CollectConfig(out=str(tmp_path / policy), frames=600, workers=1, episodes_per_shard=1,
                                            progress=False))
        ep = data.episode(0)
        lost[policy] = int((ep.rewards < 0).sum())
        if policy == "driver":
            assert set(np.unique(ep.actions[1:])) == set(range(6))
    assert lost["driver"] < lost["random"] / 2, lost  # it meets the ball; random play misses nearly every one


def test_pong_keys_are_up_and_down_arrows():
    pytest.importorskip("ale_py")
    world = SourceGame(SourceConfig(name="pong", kind="atari", env_id="ALE/Pong-v5", env_kwargs={}, policy="driver"))
    env = world.make_env()
    meanings = env.unwrapped.get_action_meanings()
    keymap = world.keymap(env)
    env.close()
    said = {keys: meanings[keymap.action_for(keys)] for keys in [(), ("up",), ("down",), ("space",), ("space", "up")]}
    # The paddle sits on the right: ALE's RIGHT moves it up the screen, LEFT down.
    assert said == {(): "NOOP", ("up",): "RIGHT", ("down",): "LEFT", ("space",): "FIRE", ("space", "up"): "RIGHTFIRE"}


def test_boxing_driver_lands_punches_and_every_action_is_seen(tmp_path):
    pytest.importorskip("ale_py")
    landed, taken = {}, {}
    for policy in ("driver", "random"):
        world = SourceConfig(name="boxing", kind="atari", env_id="ALE/Boxing-v5", env_kwargs={}, policy=policy,
                            max_episode_steps=600)
        data = collect(world, CollectConfig(out=str(tmp_path / policy), frames=600, workers=1, episodes_per_shard=1,
                                            progress=False))
        ep = data.episode(0)
        landed[policy] = float(ep.rewards[ep.rewards > 0].sum())
        taken[policy] = float(-ep.rewards[ep.rewards < 0].sum())
        if policy == "driver":
            assert set(np.unique(ep.actions[1:])) == set(range(18))
    # It closes in and lands punches (a whole bout: ~85 against random play's ~34); it also takes some, so both
    # boxers' punches are in the data.
    assert landed["driver"] >= 2 * max(landed["random"], 1) and taken["driver"] > 0, (landed, taken)


def test_boxing_keys_are_arrows_and_space():
    pytest.importorskip("ale_py")
    world = SourceGame(SourceConfig(name="boxing", kind="atari", env_id="ALE/Boxing-v5", env_kwargs={},
                                    policy="driver"))
    env = world.make_env()
    meanings = env.unwrapped.get_action_meanings()
    keymap = world.keymap(env)
    env.close()
    said = {keys: meanings[keymap.action_for(keys)]
            for keys in [(), ("up",), ("left",), ("space",), ("left", "up"), ("down", "right", "space")]}
    assert said == {(): "NOOP", ("up",): "UP", ("left",): "LEFT", ("space",): "FIRE", ("left", "up"): "UPLEFT",
                    ("down", "right", "space"): "DOWNRIGHTFIRE"}


def test_generic_env_frames_come_from_rendering():
    world = SourceGame(SourceConfig(name="cp", kind="gym", env_id="CartPole-v1", env_kwargs={}, policy="random",
                                    max_episode_steps=15))
    env = world.make_env()
    ep = run_episode(world, env, 3, 0)
    assert ep.frames.shape[1:] == (64, 64, 3) and len(ep) <= 16
    assert ep.frames.std() > 0  # a real picture, not a blank
    assert world.describe(env)["fps"] == 50


def test_bad_world_configs_are_refused():
    with pytest.raises(ValueError, match="driver exists for CarRacing and Atari Pong and Boxing only"):
        SourceConfig(kind="atari", policy="driver").validate()
    with pytest.raises(ValueError, match="world.kind"):
        SourceConfig(kind="mujoco").validate()
    with pytest.raises(ValueError, match="cannot make Gymnasium env"):
        SourceGame(SourceConfig(kind="gym", env_id="NoSuchEnv-v9", policy="random")).make_env()


def test_atari_keymap_combinations():
    km = atari_keymap("mspacman", ["NOOP", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT"])
    assert km.action_for(set()) == 0
    assert km.action_for({"up"}) == 1
    assert km.action_for({"up", "right"}) == 5  # the combination wins over either key
    assert km.action_for({"down", "left", "x"}) == 8


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_exit_when_the_collection_is_killed(tmp_path):
    """kill -9 of a collection: its workers stop too instead of recording on as orphans."""
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "train.py", "stage=collect", f"data_dir={tmp_path / 'd'}",
                             "collect.frames=1000000", "collect.workers=2", "collect.progress=false"], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(_children(proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # the workers are up and recording
        workers = _children(proc.pid)
        assert len(workers) >= 2
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 30
    while any(_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)


def test_frame_skip_holds_each_action_for_several_game_frames(tmp_path):
    def cartpole(skip, steps=40):
        return SourceConfig(name="cp", kind="gym", env_id="CartPole-v1", env_kwargs={}, policy="random",
                           max_episode_steps=steps, frame_skip=skip)

    world = SourceGame(cartpole(3))
    env = world.make_env()
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(0)
    assert reward == 3.0 and not (terminated or truncated)  # CartPole pays 1 per game frame: three were played
    assert world.describe(env)["frame_skip"] == 3 and world.describe(env)["fps"] == 50 / 3
    # Always pushing left ends the episode within a few world steps; the step that ends it stops there.
    env.reset(seed=0)
    steps, rewards = 0, []
    while True:
        _, r, terminated, truncated, _ = env.step(0)
        steps, rewards = steps + 1, rewards + [r]
        if terminated or truncated:
            break
    assert terminated and rewards[:-1] == [3.0] * (steps - 1) and 1 <= rewards[-1] <= 3
    env.close()
    # The step limit counts world steps (the game's own 500-frame limit, in game frames, is raised to match).
    long = SourceGame(SourceConfig(name="mc", kind="gym", env_id="MountainCar-v0", env_kwargs={}, policy="random",
                                   max_episode_steps=210, frame_skip=3))
    env = long.make_env()
    env.reset(seed=0)
    n = 0
    while not any(env.step(1)[2:4]):
        n += 1
    assert n + 1 == 210  # 630 game frames, past MountainCar's own 200
    env.close()
    # One dataset holds one frame skip.
    collect(cartpole(3, 12), CollectConfig(out=str(tmp_path), frames=20, workers=1, progress=False))
    with pytest.raises(DatasetError, match="frame_skip"):
        collect(cartpole(1, 12), CollectConfig(out=str(tmp_path), frames=60, workers=1, progress=False))
    with pytest.raises(ValueError, match="frameskip"):
        SourceConfig(name="pong", kind="atari", env_id="ALE/Pong-v5", policy="random", frame_skip=4).validate()
    with pytest.raises(ValueError, match="frame_skip"):
        cartpole(0).validate()
