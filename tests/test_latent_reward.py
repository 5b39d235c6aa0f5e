"""The latent reward: a small classifier beside the DiT that reads a frame's reward from its clean latent and the
previous one; the engine and the heads check pay its expected value, and ``python -m envs.loop.latent_reward``
fits it on a world's data."""

from dataclasses import replace

import numpy as np
import pytest
import torch


def _with_latent_reward(world, values=(-1.0, 0.0, 1.0), favour=2):
    """The world's DiT with a latent reward whose logits ignore the latents and favour class ``favour``."""
    from worldsim.models.dit import DiT

    dit = DiT(replace(world.dit.cfg, latent_reward=tuple(values)), world.dit.action_space).eval()
    state = dict(world.dit.state_dict())
    with torch.no_grad():
        for k, v in dit.state_dict().items():
            if k.startswith("latent_reward."):
                state[k] = torch.zeros_like(v)
        state["latent_reward.out.3.bias"] = torch.nn.functional.one_hot(torch.tensor(favour), len(values)).float() * 30
    dit.load_state_dict(state)
    return dit


def test_the_latent_reward_pays_its_expected_value_and_takes_out_the_sampling_prior():
    from worldsim.models.latent_reward import LatentReward

    net = LatentReward(4, 8, (-1.0, 0.0, 2.0))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    z = torch.randn(2, 3, 4, 8, 8)
    assert torch.allclose(net.expected(z, z), torch.full((2, 3), 1 / 3))  # uniform over -1, 0, 2
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the agents' worlds run
        assert net.expected(z, z).dtype == torch.float32
    # Trained on batches with the classes equally often, where the data has them at 10% / 80% / 10%.
    net.fold_prior(torch.tensor([1 / 3, 1 / 3, 1 / 3]), torch.tensor([0.1, 0.8, 0.1]))
    assert torch.allclose(net.expected(z, z), torch.full((2, 3), -0.1 + 0.2), atol=1e-6)
    with pytest.raises(ValueError, match="two reward values"):
        LatentReward(4, 8, (1.0,))


def test_a_world_with_a_latent_reward_is_paid_by_it_in_the_engine_and_in_the_heads_check(tiny_world, tmp_path):
    from envs.evaluation.heads import teacher_forced_heads
    from worldsim.models.dit import DiTConfig
    from worldsim.world import load_world, save_world

    world = load_world(tiny_world)
    dit = _with_latent_reward(world, favour=2)
    path = tmp_path / "lr.safetensors"
    save_world(path, world.vae, dit, source=world.source, sampler=world.sampler, latent_mean=world.latent_mean,
               latent_std=world.latent_std, context_frames=world.context_frames,
               context_actions=world.context_actions)
    loaded = load_world(path)
    assert loaded.dit.cfg.latent_reward == (-1.0, 0.0, 1.0) and loaded.dit.latent_reward is not None
    sim = loaded.simulator(batch=2)
    sim.prefill(world.context_frames[:2], world.context_actions[:2])
    _, rewards, _ = sim.step(torch.zeros(2, dtype=torch.long))
    assert torch.allclose(rewards, torch.ones(2), atol=1e-4)  # the latent reward's +1, not the head's
    plain = world.simulator(batch=2)
    plain.prefill(world.context_frames[:2], world.context_actions[:2])
    assert not torch.allclose(plain.step(torch.zeros(2, dtype=torch.long))[1], torch.ones(2), atol=1e-2)
    frames = np.concatenate(list(world.context_frames[:2]))
    paid = teacher_forced_heads(loaded, frames, np.zeros(len(frames), np.int64))[0]
    assert np.allclose(paid[1:], 1.0, atol=1e-4)
    for bad in [(1.0,), (1.0, 0.0), (0.0, 0.0, 1.0)]:
        with pytest.raises(ValueError, match="latent_reward"):
            DiTConfig(latent_reward=bad).validate()


def _score_data(folder, action_space, episodes=40, length=24, seed=0, many_values=False):
    """Episodes of grey noise whose reward is drawn in the frame, as a score is: +1 where the left half is white,
    -1 where the right half is, 0 where the top half is (``many_values``: rewards that take a new value
    on every frame instead)."""
    from worldsim.data.episodes import Episode, write_shard

    rng = np.random.default_rng(seed)
    eps = []
    for i in range(episodes):
        kind = rng.choice([0, 1, -1], size=length, p=[0.7, 0.15, 0.15])
        kind[0] = 0
        frames = rng.integers(120, 136, (length, 64, 64, 3), dtype=np.uint8)
        frames[kind == 0, :32] = 255
        frames[kind == 1, :, :32] = 255
        frames[kind == -1, :, 32:] = 255
        term = np.zeros(length, bool)
        term[-1] = True
        rewards = np.linspace(0, 3, length, dtype=np.float32) if many_values else kind.astype(np.float32)
        eps.append(Episode(frames=frames, actions=rng.integers(0, 5, length), rewards=rewards,
                           terminated=term, truncated=np.zeros(length, bool), info={"index": i}))
    source = {"env_id": "CarRacing-v3", "frame_size": 64, "fps": 50, "action_space": action_space}
    for i in range(0, episodes, 2):
        write_shard(folder / f"ep{i:07d}-{i + 1:07d}.safetensors", eps[i:i + 2], source)


def test_fitting_a_latent_reward_learns_a_score_the_frames_show(tiny_world, tmp_path):
    """On held-out episodes the fitted world pays what the frames show, its networks otherwise unchanged; the
    same command again is refused (the file exists), and data whose rewards take many values keep their head."""
    from envs.loop.latent_reward import main
    from worldsim.training.history import history_of
    from worldsim.world import load_world

    world = load_world(tiny_world)
    data = tmp_path / "data"
    data.mkdir()
    _score_data(data, world.dit.action_space)
    out = tmp_path / "scored.safetensors"
    args = [str(tiny_world), "--data", str(data), "--out", str(out), "--steps", "400", "--batch-size", "32",
            "--heldout-every", "5"]
    assert main(args) == 0
    fitted = load_world(out)
    report = fitted.meta["latent_reward_report"]
    assert report["heldout_episodes"] == 8 and report["per_frame_correlation"] > 0.7
    assert report["per_episode_correlation"] > 0.7 and report["mean_abs_episode_error"] < 2.0
    entry = history_of(fitted.meta)[-1]
    assert entry["stage"] == "latent_reward" and entry["steps"] == [0, 400] and entry["hours"] > 0
    assert torch.equal(fitted.dit.patch_out.weight, world.dit.patch_out.weight)
    assert list((data / next(p.name for p in data.iterdir() if p.name.startswith("latents-"))).iterdir())
    assert main(args) == 2
    many = tmp_path / "many"
    many.mkdir()
    _score_data(many, world.dit.action_space, episodes=4, many_values=True)
    assert main([str(tiny_world), "--data", str(many), "--out", str(tmp_path / "no.safetensors")]) == 2
    assert not (tmp_path / "no.safetensors").exists()


def test_a_world_keeps_its_latent_reward_through_a_heads_refit(tiny_world, carracing_data, tmp_path):
    """Fine-tuning a world (here its heads) keeps its latent reward as it was: the VAE, hence the latents it
    reads, do not change."""
    from envs.loop.heads import main
    from worldsim.world import load_world, save_world

    world = load_world(tiny_world)
    path = tmp_path / "lr.safetensors"
    save_world(path, world.vae, _with_latent_reward(world), source=world.source, sampler=world.sampler,
               latent_mean=world.latent_mean, latent_std=world.latent_std, context_frames=world.context_frames,
               context_actions=world.context_actions)
    out = tmp_path / "refit.safetensors"
    assert main([str(path), "--data", str(carracing_data), "--out", str(out), "--steps", "2", "--batch-size", "2",
                 "--clip-length", "4", "--heldout-every", "2"]) == 0
    before, after = load_world(path), load_world(out)
    assert after.dit.cfg.latent_reward == before.dit.cfg.latent_reward
    lr_before, lr_after = before.dit.latent_reward.state_dict(), after.dit.latent_reward.state_dict()
    assert all(torch.equal(lr_before[k], lr_after[k]) for k in lr_before)


def test_a_dynamics_fine_tune_from_a_world_keeps_its_latent_reward(tiny_world, carracing_data, tmp_path):
    """``dynamics.train.init_from=WORLD`` with the model settings of the config (which name no latent reward)
    carries the world's latent reward into the fine-tuned network unchanged."""
    from worldsim.training.dynamics_trainer import DynamicsTrainConfig, load_dynamics, train_dynamics
    from worldsim.world import load_world, save_world

    world = load_world(tiny_world)
    path = tmp_path / "lr.safetensors"
    dit = _with_latent_reward(world)
    save_world(path, world.vae, dit, source=world.source, sampler=world.sampler, latent_mean=world.latent_mean,
               latent_std=world.latent_std, context_frames=world.context_frames,
               context_actions=world.context_actions)
    cfg = DynamicsTrainConfig(batch_size=2, clip_length=4, heldout_every=2, eval_every=1000, log_every=1, steps=1,
                              pre_encode=False, init_from=str(path), warmup=1)
    run = tmp_path / "run"
    train_dynamics(replace(world.dit.cfg, latent_reward=()), cfg, world.sampler, carracing_data, run, torch.device("cpu"))
    tuned, _ = load_dynamics(run / "dynamics.safetensors")
    assert tuned.cfg.latent_reward == (-1.0, 0.0, 1.0)
    ref = load_world(path).dit.latent_reward.state_dict()
    assert all(torch.equal(ref[k].float(), v.float()) for k, v in tuned.latent_reward.state_dict().items())
