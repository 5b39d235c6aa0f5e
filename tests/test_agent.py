"""Agents trained in a world: the adapter, the agent file, train.py stage=agent and stage=agent_eval."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

ROOT = Path(__file__).resolve().parent.parent


def _run(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_the_single_world_agent_env_passes_the_rl_librarys_checker(tiny_world):
    from stable_baselines3.common.env_checker import check_env

    from envs.agent.in_world import AgentWorldEnv
    from envs.agent.network import AgentConfig

    env = AgentWorldEnv(str(tiny_world), AgentConfig(action_repeat=2), max_frames=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its image heuristics: our observations are latents, not pictures
        check_env(env, warn=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape == (8, 16, 16) and obs.dtype == np.float32
    # Stacked as newest first: after a step the second half is the previous decision's latent.
    nxt, *_ = env.step(1)
    np.testing.assert_array_equal(nxt[4:], obs[:4])


def test_the_batched_adapter_autoresets_and_reports_episodes(tiny_world):
    from envs.agent.in_world import AgentWorlds, sb3_vec_env
    from envs.agent.network import AgentConfig
    from envs.worldenv.core import WorldCore

    core = WorldCore(3, tiny_world, observation="latents")
    worlds = AgentWorlds(core, AgentConfig(action_repeat=3), max_frames=7, seed=0)
    venv = sb3_vec_env(worlds)
    obs = venv.reset()
    assert obs.shape == (3, 8, 16, 16)
    ends = []
    for _ in range(5):
        venv.step_async(np.array([0, 1, 2]))
        obs, rewards, dones, infos = venv.step_wait()
        assert rewards.shape == (3,) and np.isfinite(rewards).all()
        for i in np.flatnonzero(dones):
            ends.append(infos[i])
            # the ended world restarted at once: its observation is a fresh start (both halves alike)
            np.testing.assert_array_equal(obs[i, :4], obs[i, 4:])
            assert infos[i]["terminal_observation"].shape == (8, 16, 16)
    # 7 frames at 3 per decision: every episode is truncated after 3 decisions (9 frames)
    assert ends and all(e["episode"]["l"] == 9 and e["TimeLimit.truncated"] for e in ends)


def test_latent_observations_skip_the_decoder_and_match_the_engine(tiny_world):
    from envs.worldenv.vector_env import WorldModelVectorEnv

    # float32: latents compared exactly (dtype=auto is bf16 on a CPU with native bf16; bf16 is checked below)
    env = WorldModelVectorEnv(2, checkpoint=tiny_world, observation="latents", dtype="float32")
    obs, _ = env.reset(seed=1)
    assert obs.shape == (2, 4, 16, 16) and obs.dtype == np.float32
    obs, *_ = env.step(np.array([1, 2]))
    np.testing.assert_allclose(obs, env.core.sim.last[:, 0].numpy())
    # frames and latents come from the same generation: a frames env with the same seed decodes those latents
    ref = WorldModelVectorEnv(2, checkpoint=tiny_world, dtype="float32")
    ref.reset(seed=1)
    ref.step(np.array([1, 2]))
    np.testing.assert_allclose(ref.core.sim.last[:, 0].numpy(), obs)
    with pytest.raises(RuntimeError, match="decod"):
        env.core.sim.step(torch.zeros(2, dtype=torch.long), decode=True)
    with pytest.raises(ValueError, match="render_mode"):
        WorldModelVectorEnv(2, checkpoint=tiny_world, observation="latents", render_mode="rgb_array")
    with pytest.raises(ValueError, match="observation"):
        WorldModelVectorEnv(2, checkpoint=tiny_world, observation="pixels")


def test_a_shorter_window_and_bf16_are_checked_and_run(tiny_world):
    from envs.worldenv.core import WorldCore
    from worldsim.engine.sampler import SamplerConfig

    with pytest.raises(ValueError, match="longer than"):
        WorldCore(1, tiny_world, window=5)  # the tiny world was trained with 4
    with pytest.raises(ValueError, match="window"):
        SamplerConfig(window=0)
    core = WorldCore(2, tiny_world, window=2, dtype="bfloat16", observation="latents")
    from worldsim.device import cpu_has_amx

    assert core.sim.cache.window == 2
    # Attention runs in bf16 where AMX makes it faster, in float32 on other CPUs.
    assert core.sim.cache.k.dtype == (torch.bfloat16 if cpu_has_amx() else torch.float32)
    core.start(np.arange(2), [core.context(np.random.default_rng(0), None)[:2]] * 2)
    for _ in range(4):
        _, r, *_ = core.step(np.array([1, 3]))
    assert np.isfinite(core.latents()).all() and np.isfinite(r).all()


def test_real_observations_equal_whole_episode_encoding(tiny_world):
    from envs.agent.view import RealLatents
    from worldsim.data.latents import encode_episode, encoder_reach
    from worldsim.engine.latent_space import LatentEncoder
    from worldsim.world import load_world

    world = load_world(tiny_world)
    frames = np.random.default_rng(0).integers(0, 256, (14, 64, 64, 3), dtype=np.uint8)
    meta = {"latent_mean": world.latent_mean.tolist(), "latent_std": world.latent_std.tolist()}
    whole = encode_episode(LatentEncoder(world.vae, meta, "cpu"), frames, encoder_reach(world.vae))
    view = RealLatents(world)
    for t, f in enumerate(frames):
        view.add(f)
        np.testing.assert_allclose(view.latent(), whole[t], atol=1e-5)


def test_agent_files_round_trip_and_foreign_or_truncated_ones_are_refused(tmp_path):
    from envs.agent.network import AgentConfig, AgentNet, load_agent, save_agent
    from worldsim.checkpoint import CheckpointError

    net = AgentNet(AgentConfig(channels=(8, 8), hidden=16), (4, 16, 16), 5)
    path = save_agent(tmp_path / "a.safetensors", net, world={"name": "tiny", "vae_id": "x"},
                      action_space={"type": "Discrete", "n": 5, "start": 0})
    agent = load_agent(path)
    obs = np.random.default_rng(0).standard_normal((3, 8, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(agent.net.act(obs), net.act(obs))
    assert path.stat().st_size < 4 * 2**20
    # a world file is not an agent
    from worldsim.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "w.safetensors", "world", {"agent": net}, {})
    with pytest.raises(CheckpointError, match="world"):
        load_agent(tmp_path / "w.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_agent(tmp_path / "cut.safetensors")


@pytest.mark.slow
def test_stage_agent_trains_resumes_and_stage_agent_eval_scores_it_in_the_real_game(tiny_world, tmp_path,
                                                                                    carracing_data):
    run = tmp_path / "run"
    common = [f"agent.world={tiny_world}", f"run_dir={run}", "agent.train.worlds=4", "agent.train.n_steps=4",
              "agent.train.batch_size=8", "agent.train.epochs=1", "agent.train.window=null", "agent.train.save_every=1",
              "agent.train.max_frames=12", "agent.train.progress=false", "agent.net.action_repeat=2",
              "agent.train.starts=contexts"]
    first = _run(["stage=agent", "agent.train.timesteps=32", *common], tmp_path)  # two rollouts of 4 worlds x 4
    assert first.returncode == 0, first.stderr[-2000:]
    agent = run / "agent" / "tiny-agent.safetensors"
    assert agent.exists() and (run / "agent" / "state.safetensors").exists()
    rows = [json.loads(x) for x in (run / "agent" / "agent_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [16, 32]
    again = _run(["stage=agent", "agent.train.timesteps=48", *common], tmp_path)
    assert again.returncode == 0 and "resuming the agent from 32 decisions" in again.stdout, again.stderr[-2000:]
    from envs.agent.network import load_agent

    assert load_agent(agent).meta["decisions"] == 48
    data = tmp_path / "data"  # the world's data: the agent's real episode is added to it
    shutil.copytree(carracing_data, data)
    before = {p.name: p.read_bytes() for p in data.glob("*.safetensors")}
    ev = _run(["stage=agent_eval", f"agent_eval.agent={agent}", f"agent.world={tiny_world}", f"run_dir={run}",
               "agent_eval.episodes=1", "agent_eval.max_frames=20", "agent_eval.world_episodes=1",
               "agent_eval.world_sampling_steps=2", f"agent_eval.record={data}"], tmp_path)
    assert ev.returncode == 0, ev.stderr[-2000:]
    last = ev.stdout.strip().splitlines()[-1]
    assert last.startswith("real return: ") and last.endswith("over 1 episodes")
    report = json.loads((run / "agent_eval" / "report.json").read_text())
    assert set(report["baselines"]) == {"random", "driver"} and report["agent"]["episodes"] == 1
    assert len(report["agent"]["predicted_in_world"]["returns"]) == 1
    assert report["agent"]["predicted_in_world"]["sampling_steps"] == 2  # the world sampled as asked
    check = report["agent"]["world_reward_on_real_episodes"]
    assert check["episodes"] == 1 and check["frames"] == 20  # the world's reward head on the real episode
    assert (run / "agent_eval" / "returns.png").exists()
    from worldsim.data.dataset import EpisodeDataset

    assert {p.name: p.read_bytes() for p in data.glob("*.safetensors") if p.name in before} == before
    old, both = EpisodeDataset(carracing_data), EpisodeDataset(data)
    assert len(both) == len(old) + 1 and report["recorded"]["episodes"] == 1
    ref = both.refs[-1]
    assert ref.index == max(old.indices()) + 1 and ref.length == 21  # the reset frame and 20 steps
    ep = both.episode(len(both) - 1)
    assert ep.info["policy"] == "agent" and ep.truncated[-1] and not ep.truncated[:-1].any()
    assert np.float32(report["agent"]["returns"][0]) == pytest.approx(ep.rewards.sum(), abs=1e-3)


@pytest.mark.parametrize("compare", [False, True])
def test_play_with_an_agent_at_the_wheel(tiny_world, tmp_path, compare):
    import play
    from envs.agent.network import AgentConfig, AgentNet, save_agent
    from envs.agent.view import world_vae_id
    from worldsim.world import load_world

    world = load_world(tiny_world)
    net = AgentNet(AgentConfig(action_repeat=3, channels=(8, 8), hidden=16), (4, 16, 16), 5)
    agent = save_agent(tmp_path / "tiny-agent.safetensors", net, world={"name": "tiny", "vae_id": world_vae_id(world)},
                       action_space=world.dit.action_space)
    out = tmp_path / "agent.mp4"
    args = ["--checkpoint", str(tiny_world), "--headless", "--frames", "10", "--policy", "agent", "--agent", str(agent),
            "--record", str(out), "--record-dir", str(tmp_path / "rec")] + (["--compare"] if compare else [])
    assert play.main(args) == 0
    assert out.stat().st_size > 0
    missing = [str(tmp_path / "missing.safetensors") if a == str(agent) else a for a in args]
    assert play.main(missing) == 2


def test_the_same_ppo_trains_in_the_real_game_as_a_baseline(tiny_world, tmp_path):
    from envs.agent.network import AgentConfig, load_agent
    from envs.agent.training import AgentTrainConfig, train_agent

    cfg = AgentTrainConfig(worlds=2, timesteps=16, n_steps=4, batch_size=4, epochs=1, save_every=1, progress=False,
                           max_frames=10, env="real")
    out = train_agent(tiny_world, AgentConfig(action_repeat=2, channels=(8, 8), hidden=16), cfg, tmp_path)
    agent = load_agent(out)
    assert agent.meta["trained_in"] == "real" and agent.meta["decisions"] == 16
    rows = [json.loads(x) for x in (tmp_path / "agent" / "agent_log.jsonl").read_text().splitlines()]
    assert rows[-1]["episodes"] >= 2  # 10-frame real episodes, 5 decisions each, reported by the library's Monitor


@pytest.mark.slow
def test_a_killed_agent_run_saves_and_resumes(tiny_world, tmp_path):
    import os
    import signal
    import time

    run = tmp_path / "run"
    args = [sys.executable, str(ROOT / "train.py"), "stage=agent", f"agent.world={tiny_world}", f"run_dir={run}",
            "agent.train.worlds=2", "agent.train.n_steps=4", "agent.train.batch_size=8", "agent.train.epochs=1",
            "agent.train.window=null", "agent.train.save_every=1000", "agent.train.progress=false",
            "agent.train.timesteps=100000", "agent.net.action_repeat=1", "agent.train.starts=contexts"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = run / "agent" / "agent_log.jsonl"
    deadline = time.time() + 120
    # A log line is written as a rollout ends, its learning step comes after it: once 3 rollouts have ended, the
    # state after learning from the first 2 (16 decisions) has been taken, whatever the machine's load.
    while not (log.exists() and log.read_text().count("\n") >= 3) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "saved the agent at" in out and "run the same command again to resume" in out
    from envs.agent.network import load_agent

    saved = load_agent(run / "agent" / "tiny-agent.safetensors").meta["decisions"]
    assert saved >= 16  # two rollouts of 2 worlds x 4 learned from, though save_every was never reached
    again = _run([a for a in args[2:] if "timesteps" not in a] + [f"agent.train.timesteps={saved + 8}"], tmp_path)
    assert again.returncode == 0 and f"resuming the agent from {saved} decisions" in again.stdout, again.stderr[-2000:]


def test_imagined_episodes_start_from_real_clips_of_the_data(tiny_world, carracing_data):
    from envs.agent.in_world import AgentWorlds
    from envs.agent.network import AgentConfig
    from envs.agent.starts import data_starts
    from envs.worldenv.core import WorldCore
    from worldsim.data.dataset import EpisodeDataset
    from worldsim.engine.latent_space import LatentEncoder
    from worldsim.world import load_world

    world = load_world(tiny_world)
    frames, actions = data_starts(world, carracing_data, episodes=2, context=4, every=5, skip=2)
    ep = EpisodeDataset(carracing_data).episode(0)
    assert frames.shape[1:] == (4, 64, 64, 3) and len(frames) == len(actions) >= 2
    np.testing.assert_array_equal(frames[0], ep.frames[2:6])  # clip 0 = frames 2..5 of the first episode
    np.testing.assert_array_equal(actions[1], ep.actions[7:11])
    # every world starts from one of the clips: with one clip, all observe its last frame's latent
    core = WorldCore(3, tiny_world, observation="latents", dtype="float32")  # compared with the encoder at 1e-5
    worlds = AgentWorlds(core, AgentConfig(), max_frames=8, starts=(frames[:1], actions[:1]))
    obs = worlds.reset()
    meta = {"latent_mean": world.latent_mean.tolist(), "latent_std": world.latent_std.tolist()}
    z = LatentEncoder(world.vae, meta, "cpu")(torch.from_numpy(frames[:1]))[0, -1].numpy()
    for i in range(3):
        np.testing.assert_allclose(obs[i, :4], z, atol=1e-5)


@pytest.mark.parametrize("name,trained_in,repeat", [("carracing", "world", 4), ("boxing", "data", 1)])
def test_the_shipped_agents_see_through_the_shipped_worlds_vae(name, trained_in, repeat):
    from envs.agent.evaluation import _world_for
    from envs.agent.network import load_agent
    from envs.agent.view import sees_through
    from worldsim.shipped import checkpoints_dir, known_worlds

    path = checkpoints_dir() / f"{name}-agent.safetensors"
    assert path.stat().st_size <= 4 * 2**20
    agent = load_agent(path)
    world, _ = _world_for(agent, None, "cpu")  # the file it trained in if present, else the shipped world by name
    assert world.name == name and sees_through(agent.world, world)
    shipped, _ = _world_for(agent, checkpoints_dir() / f"{name}.safetensors", "cpu")  # named: checked, accepted
    assert sees_through(agent.world, shipped)
    assert agent.meta["trained_in"] == trained_in and agent.cfg.action_repeat == repeat
    assert f"{name}-agent" not in known_worlds()  # an agent file is not a world


def test_the_driver_baseline_is_offered_where_the_game_has_a_scripted_driver():
    from envs.games.source import has_driver

    assert has_driver("carracing", "CarRacing-v3")
    assert has_driver("atari", "ALE/Boxing-v5") and has_driver("atari", "ALE/Pong-v5")
    assert not has_driver("atari", "ALE/Breakout-v5")
    assert not has_driver("gym", "CartPole-v1")


def test_recording_refuses_a_folder_of_another_game(carracing_data, tmp_path):
    from envs.agent.record import record_episodes
    from worldsim.data.dataset import EpisodeDataset
    from worldsim.data.episodes import DatasetError

    data = tmp_path / "data"
    shutil.copytree(carracing_data, data)
    source = dict(EpisodeDataset(data).source)
    trace = {"frames": np.zeros((3, 64, 64, 3), np.uint8), "actions": [0, 1, 2], "rewards": [0.0, 1.0, -1.0],
             "terminated": True, "truncated": False}
    with pytest.raises(DatasetError, match="agent_eval.record"):
        record_episodes(data, [trace], [7], dict(source, env_id="ALE/Boxing-v5"), "agent.safetensors")
    names = sorted(p.name for p in data.glob("*.safetensors"))
    (new,) = record_episodes(data, [trace], [7], source, "agent.safetensors")
    assert new.name not in names and len(EpisodeDataset(data)) == len(EpisodeDataset(carracing_data)) + 1


def test_agent_eval_checks_every_target_before_it_plays(tiny_world, carracing_data, tmp_path, capsys):
    """A folder the episodes cannot join, or a bad compare file, is refused before any episode is played; the
    report is written before the episodes are recorded; the same recording twice is refused as duplicates."""
    from envs.agent.evaluation import AgentEvalConfig, evaluate_agent
    from envs.agent.network import AgentConfig, AgentNet, save_agent
    from envs.agent.view import world_vae_id
    from worldsim.data.dataset import EpisodeDataset
    from worldsim.data.episodes import DatasetError
    from worldsim.world import load_world

    world = load_world(tiny_world)
    net = AgentNet(AgentConfig(action_repeat=2, channels=(8, 8), hidden=16), (4, 16, 16), 5)
    agent = save_agent(tmp_path / "tiny-agent.safetensors", net, world={"name": "tiny", "vae_id": world_vae_id(world)},
                       action_space=world.dit.action_space)
    played = []
    import envs.agent.evaluation as ev

    real_play = ev.play_real

    def counting(*a, **k):
        played.append(1)
        return real_play(*a, **k)

    ev.play_real = counting
    try:
        def run(**kw):
            cfg = AgentEvalConfig(episodes=1, max_frames=6, world_episodes=0, baselines=[], reward_check_episodes=1,
                                  out=str(tmp_path / "eval"), **kw)
            return evaluate_agent(agent, cfg, tiny_world)

        worlds = tmp_path / "worlds"
        worlds.mkdir()
        shutil.copy(tiny_world, worlds / "tiny.safetensors")
        with pytest.raises(DatasetError, match="not episode shards"):
            run(record=str(worlds))
        with pytest.raises(Exception, match="missing"):
            run(compare=[str(tmp_path / "missing.safetensors")])
        (tmp_path / "afile").write_text("x")
        with pytest.raises(DatasetError, match="is a file"):
            run(record=str(tmp_path / "afile"))
        with pytest.raises(ValueError, match="world_sampling_steps must be a whole number 1..8"):
            run(world_sampling_steps=9)
        assert played == []  # nothing was played for any of them
        data = tmp_path / "data"
        shutil.copytree(carracing_data, data)
        before = len(EpisodeDataset(data))
        capsys.readouterr()
        report = run(record=str(data))
        assert "agent (real): episode 1/1 (seed 500000000): return" in capsys.readouterr().out  # it says how far
        assert report["recorded"]["episodes"] == 1 and len(EpisodeDataset(data)) == before + 1
        assert json.loads((tmp_path / "eval" / "report.json").read_text())["recorded"]["episodes"] == 1
        played.clear()
        with pytest.raises(DatasetError, match="duplicates"):
            run(record=str(data))
        assert played == [] and len(EpisodeDataset(data)) == before + 1
    finally:
        ev.play_real = real_play


def test_recording_refuses_a_folder_of_generated_rollouts(carracing_data, tmp_path):
    from envs.agent.record import check_record_target
    from worldsim.data.dataset import EpisodeDataset
    from worldsim.data.episodes import DatasetError, Episode, write_shard

    source = dict(EpisodeDataset(carracing_data).source)
    gen = tmp_path / "rollouts"
    ep = Episode(np.zeros((3, 64, 64, 3), np.uint8), np.zeros(3, np.int64), np.zeros(3, np.float32),
                 np.zeros(3, bool), np.zeros(3, bool), {"index": 0})
    write_shard(gen / "ep0000000-0000000.safetensors", [ep],
                dict(source, provenance={"kind": "world", "world_file": "w.safetensors"}))
    with pytest.raises(DatasetError, match="generated by a world"):
        check_record_target(gen, source, "agent.safetensors", [1])


def test_compared_agents_of_one_name_keep_each_result():
    """Round folders all hold ``<world>-agent.safetensors``: each compared file keeps its own row in the report
    (its path where names collide), and a file named twice is refused before anything is played."""
    from envs.agent.evaluation import compare_labels

    assert compare_labels(["a/x-agent.safetensors", "b/y.safetensors"]) == ["x-agent", "y"]
    assert compare_labels(["r4/x-agent.safetensors", "r5/x-agent.safetensors", "random.safetensors"]) == [
        "r4/x-agent.safetensors", "r5/x-agent.safetensors", "random.safetensors"]
    with pytest.raises(ValueError, match="more than once"):
        compare_labels(["r4/x.safetensors", "r4/x.safetensors"])
