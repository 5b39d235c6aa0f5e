"""stage=imitate: an agent fit to the data's driver through the world's VAE (envs/agent/imitation.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_returns_count_decisions_of_repeated_frames():
    from envs.agent.imitation import discounted_returns

    r = np.array([0.0, 1, 2, 3, 4, 5], np.float32)  # r[t]: paid on reaching frame t
    g = discounted_returns(r, repeat=2, gamma=0.5)
    # from frame 0: the decision holding frames 1-2 pays 3, the next (3-4) 7, the last (5) 5
    assert g[0] == pytest.approx(3 + 0.5 * 7 + 0.25 * 5)
    assert g[4] == pytest.approx(5) and g[5] == 0.0
    np.testing.assert_allclose(discounted_returns(r, 1, 1.0), [15, 14, 12, 9, 5, 0])


def test_observations_are_stacked_as_the_agent_sees_them():
    from envs.agent.imitation import Decisions
    from envs.agent.network import AgentConfig
    from envs.agent.view import AgentView

    cfg = AgentConfig(stack=3, action_repeat=2)
    z = np.random.default_rng(0).normal(size=(9, 2, 4, 4)).astype(np.float32)
    d = Decisions([z], [np.arange(9)], [np.zeros(9, np.float32)], cfg)
    assert len(d) == 8  # every frame but the last has a next action
    view = AgentView(cfg, (2, 4, 4))
    view.start(z[:1])
    for t in range(0, 8, 2):  # the agent decides at frames 0, 2, 4, 6
        if t:
            view.push(z[t][None])
        obs, act, _ = d.batch(np.array([t]))
        np.testing.assert_array_equal(obs[0].numpy(), view.obs[0])
        assert int(act[0]) == t + 1  # the action the driver took after seeing frame t


def _driver_data(folder: Path, source: dict, episodes: int = 10, length: int = 60) -> None:
    """Episodes whose driver steers by the frame: after a bright frame it takes action 1, after a dark one 3."""
    from worldsim.data.episodes import Episode, write_shard

    rng = np.random.default_rng(0)
    for i in range(episodes):
        bright = rng.random(length) < 0.5
        frames = np.where(bright[:, None, None, None], 255, 0).astype(np.uint8) * np.ones((1, 64, 64, 3), np.uint8)
        actions = np.zeros(length, np.int64)
        actions[1:] = np.where(bright[:-1], 1, 3)
        ep = Episode(frames, actions, np.ones(length, np.float32), np.zeros(length, bool),
                     np.r_[np.zeros(length - 1, bool), True], {"index": i, "seed": i})
        write_shard(folder / f"ep{i:07d}-{i:07d}.safetensors", [ep], source)


def _small(tiny_world, tmp_path):
    """The tiny world, a folder of its frame-steered driver's episodes and a small agent network."""
    from envs.agent.network import AgentConfig
    from worldsim.world import load_world

    world = load_world(tiny_world)
    _driver_data(tmp_path / "data", dict(world.source))
    return world, tmp_path / "data", AgentConfig(stack=2, action_repeat=1, channels=(8, 8), hidden=32)


def test_imitation_learns_the_driver_and_writes_an_agent_ppo_can_continue(tiny_world, tmp_path):
    from envs.agent.imitation import ImitateConfig, imitate
    from envs.agent.network import load_agent

    world, data, net = _small(tiny_world, tmp_path)
    out = imitate(tiny_world, net, ImitateConfig(epochs=20, batch_size=32, lr=1e-2, heldout_every=5, progress=False),
                  data, tmp_path / "run", gamma=0.9)
    report = json.loads((tmp_path / "run" / "imitate" / "imitate.json").read_text())
    assert report["heldout_episodes"] == 2 and report["train_episodes"] == 8
    assert report["heldout"]["accuracy"] > 0.9 > report["heldout_majority_accuracy"] + 0.25
    agent = load_agent(out)
    assert agent.meta["trained_in"] == "data" and agent.meta["history"][-1]["stage"] == "imitate"
    assert [p.is_dir() for p in data.glob("latents-*")] == [True]  # encoded once, beside the frames
    # the value head learned the scale of the returns (1 a frame, gamma 0.9: up to ~10)
    from envs.agent.imitation import data_decisions, driver_latents

    held = data_decisions(*driver_latents(world, data), "heldout", ImitateConfig(heldout_every=5), net, 0.9)
    obs, _, ret = held.batch(np.arange(20))
    with torch.no_grad():
        _, v = agent.net(obs)
    assert float(v.mean()) == pytest.approx(float(ret.mean()), rel=0.3)


def test_stage_imitate_refuses_another_games_data_and_keeps_named_files(tiny_world, tmp_path):
    from worldsim.world import load_world

    world = load_world(tiny_world)
    other, data = tmp_path / "boxing", tmp_path / "data"
    _driver_data(other, dict(world.source, env_id="ALE/Boxing-v5"), episodes=2, length=8)
    _driver_data(data, dict(world.source), episodes=4, length=8)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / "train.py"), "stage=imitate", f"agent.world={tiny_world}",
                               f"run_dir={tmp_path / 'run'}", "agent.imitate.progress=false", "agent.imitate.epochs=1",
                               "agent.imitate.heldout_every=2", *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)

    r = run(f"data_dir={other}")
    assert r.returncode == 2 and "ALE/Boxing-v5 episodes" in r.stderr, r.stderr[-2000:]
    keep = tmp_path / "keep.safetensors"
    keep.write_bytes(b"mine")
    r = run(f"data_dir={data}", f"agent.out={keep}")
    assert r.returncode == 2 and "agent.overwrite=true" in r.stderr and keep.read_bytes() == b"mine", r.stderr[-2000:]
    r = run(f"data_dir={data}")
    assert r.returncode == 0 and "held-out agreement with the driver" in r.stdout, r.stderr[-2000:]
    assert (tmp_path / "run" / "imitate" / "tiny-agent.safetensors").exists()


def test_ppo_anchored_to_the_driver_keeps_its_actions(tiny_world, tmp_path):
    from envs.agent.imitation import ImitateConfig, data_decisions, driver_latents
    from envs.agent.network import load_agent
    from envs.agent.training import AgentTrainConfig, train_agent

    world, data, net = _small(tiny_world, tmp_path)
    held = data_decisions(*driver_latents(world, data), "heldout", ImitateConfig(), net, 0.99)

    def agreement(weight: float) -> float:
        cfg = AgentTrainConfig(worlds=4, n_steps=8, batch_size=32, epochs=1, timesteps=160, lr=3e-3, window=None,
                               max_frames=12, starts="contexts", progress=False, imitate_weight=weight,
                               imitate_steps=200)
        out = train_agent(tiny_world, net, cfg, tmp_path / f"run-{weight}", data_dir=data)
        obs, act, _ = held.batch(np.arange(len(held)))
        with torch.no_grad():
            logits, _ = load_agent(out).net(obs)
        return float((logits.argmax(-1) == act).float().mean())

    assert agreement(1.0) > 0.9 > agreement(0.0) + 0.2  # the world pays nothing for the driver's actions


def test_ppo_anchored_to_the_agent_it_continues_stays_near_it(tiny_world, tmp_path):
    from envs.agent.imitation import ImitateConfig, data_decisions, driver_latents, imitate
    from envs.agent.network import load_agent
    from envs.agent.training import AgentTrainConfig, train_agent

    world, data, net = _small(tiny_world, tmp_path)
    start = imitate(tiny_world, net, ImitateConfig(epochs=10, batch_size=32, lr=1e-2, heldout_every=5, progress=False),
                    data, tmp_path / "start", gamma=0.99)
    held = data_decisions(*driver_latents(world, data), "heldout", ImitateConfig(), net, 0.99)
    obs, _, _ = held.batch(np.arange(len(held)))
    with torch.no_grad():
        log_p = torch.log_softmax(load_agent(start).net(obs)[0], -1)

    def drift(weight: float) -> float:
        """KL(start || trained) on held-out real observations after PPO with this anchor weight."""
        # a large entropy bonus drags the policy to uniform: what the world "pays" here
        cfg = AgentTrainConfig(worlds=4, n_steps=8, batch_size=32, epochs=8, timesteps=160, lr=3e-3, ent_coef=2.0,
                               window=None, max_frames=12, starts="contexts", progress=False, warmup=0,
                               init_from=str(start), imitate_weight=weight, imitate_steps=30, anchor="init")
        out = train_agent(tiny_world, net, cfg, tmp_path / f"run-{weight}", data_dir=data)
        with torch.no_grad():
            log_q = torch.log_softmax(load_agent(out).net(obs)[0], -1)
        return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())

    anchored, free = drift(3.0), drift(0.0)
    assert anchored < 0.3 * free, (anchored, free)
