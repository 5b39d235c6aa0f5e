import pytest
import torch

from worldsim.models.causal_conv import StreamCache
from worldsim.models.vae import CausalVAE, VAEConfig

TINY = dict(encoder_channels=(8, 16, 16), decoder_channels=(8, 16, 16), norm_groups=4, latent_channels=4)


def make(**kw) -> CausalVAE:
    torch.manual_seed(0)
    return CausalVAE(VAEConfig(**{**TINY, **kw})).eval()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_encoder_is_causal(k):
    vae = make(temporal_factor=k)
    x = torch.rand(2, 1 + 3 * k, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x)
        for t in range(1, x.shape[1]):  # change frame t: latents covering only frames < t stay put
            y = x.clone()
            y[:, t] = -y[:, t]
            z2 = vae.encode(y)
            j = (t - 1) // k + 1  # first latent frame that covers frame t
            assert torch.equal(z[:, :j], z2[:, :j]), (k, t)
            assert not torch.allclose(z[:, j], z2[:, j])


@pytest.mark.parametrize("k", [1, 2, 4])
def test_decoder_is_causal(k):
    vae = make(temporal_factor=k)
    z = torch.randn(1, 4, 4, 16, 16)
    with torch.no_grad():
        a = vae.decode(z)
        z[:, 2] += 1.0
        b = vae.decode(z)
    n = 1 + k  # frames decoded from latents 0 and 1
    assert torch.equal(a[:, :n], b[:, :n])
    assert not torch.allclose(a[:, n:], b[:, n:])


@pytest.mark.parametrize("k", [1, 2, 4])
def test_streaming_decode_equals_full_decode(k):
    vae = make(temporal_factor=k, spatial_factor=8, encoder_channels=(8, 8, 16, 16), decoder_channels=(8, 8, 16, 16))
    z = torch.randn(2, 5, 4, 8, 8)
    with torch.no_grad():
        full = vae.decode(z)
        cache = StreamCache()
        parts = [vae.decode(z[:, i : i + 1], cache) for i in range(z.shape[1])]
    stream = torch.cat(parts, dim=1)
    assert full.shape == (2, 1 + 4 * k, 3, 64, 64)
    assert [p.shape[1] for p in parts] == [1] + [k] * 4
    torch.testing.assert_close(stream, full, rtol=1e-5, atol=1e-5)


def test_image_is_a_one_frame_clip():
    vae = make()
    x = torch.rand(3, 5, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        clip = vae.encode(x)
        image = vae.encode(x[:, :1])
        assert image.shape == (3, 1, 4, 16, 16)
        torch.testing.assert_close(image, clip[:, :1])
        assert vae.decode(image).shape == (3, 1, 3, 64, 64)


def test_training_pass_shapes_and_gradients():
    vae = make().train()
    x = torch.rand(2, 3, 3, 64, 64) * 2 - 1
    recon, mean, logvar = vae(x)
    assert recon.shape == x.shape and mean.shape == logvar.shape == (2, 3, 4, 16, 16)
    recon.square().mean().backward()
    assert all(p.grad is not None for p in vae.encoder.parameters())


def test_bad_inputs_and_configs_are_refused():
    vae = make()
    with pytest.raises(ValueError, match="to_model"):
        vae.encode(torch.zeros(1, 2, 64, 64, 3))
    with pytest.raises(ValueError, match="latents must be"):
        vae.decode(torch.zeros(1, 1, 3, 16, 16))
    with pytest.raises(ValueError, match="1 \\+ 2\\*n"):
        make(temporal_factor=2).encode(torch.zeros(1, 2, 3, 64, 64))
    with pytest.raises(ValueError, match="spatial_factor"):
        VAEConfig(spatial_factor=2).validate()
    with pytest.raises(ValueError, match="needs 4 entries"):
        VAEConfig(spatial_factor=8).validate()


def test_benchmark_smoke(tmp_path):
    """The decode and engine sections run at the sizes asked for and save exactly what they return."""
    import json

    from envs.bench import main
    from worldsim.models.dit import DiT, DiTConfig

    out = main(["--only", "decode,engine", "--iters", "8", "--json", str(tmp_path / "b.json"), "--frames", "70",
                "--dit", "dim=32,depth=2,heads=2,window=4,patch_size=4"])
    saved = json.loads((tmp_path / "b.json").read_text())
    assert {k: saved[k] for k in ("decode", "engine")} == {k: out[k] for k in ("decode", "engine")}
    engine = out["engine"]
    assert {"frame_ms_at_50", "frame_ms_at_70", "rss_mib_at_70"} <= set(engine)  # the rollout length asked for
    assert engine["late_over_early"] == engine["frame_ms_at_70"] / engine["frame_ms_at_50"]
    expect = DiT(DiTConfig(latent_channels=8, dim=32, depth=2, heads=2, window=4, patch_size=4),
                 {"type": "Discrete", "n": 5, "start": 0})
    assert abs(engine["dit_params_M"] - sum(p.numel() for p in expect.parameters()) / 1e6) < 1e-9  # that model
    assert out["decode"]["stream_decode_p99_ms"] >= out["decode"]["stream_decode_p50_ms"] > 0


def test_motion_mask_marks_a_moving_dot_and_not_the_still_background():
    from worldsim.training.vae_trainer import motion_mask

    x = torch.full((1, 3, 3, 8, 8), -0.5)  # a still court
    x[:, :, :, 6, :] = 0.8                 # a still wall
    for t in range(3):                     # a one-pixel ball moving right
        x[0, t, :, 2, 2 + 2 * t] = 0.9
    m = motion_mask(x, 0.1)
    assert m.shape == (1, 3, 1, 8, 8)
    for t in range(3):
        assert m[0, t, 0, 2, 2 + 2 * t] == 1
    assert m.sum() == 3  # nothing else moves


def test_fine_tuning_starts_from_another_vae_and_refuses_another_architecture(carracing_data, tmp_path):
    from worldsim.models.vae import load_vae, save_vae
    from worldsim.training.vae_trainer import VAETrainConfig, init_vae, train_vae

    cfg = VAEConfig(latent_channels=4, encoder_channels=[8, 16, 16], decoder_channels=[8, 16, 16], temporal_kernel=2,
                    norm_groups=4)
    torch.manual_seed(0)
    parent = CausalVAE(cfg)
    save_vae(tmp_path / "parent.safetensors", parent)
    torch.manual_seed(1)
    child = CausalVAE(cfg)
    init_vae(child, tmp_path / "parent.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(child.state_dict().values(), parent.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="another architecture"):
        init_vae(CausalVAE(VAEConfig(latent_channels=4, encoder_channels=[8, 16, 16], decoder_channels=[8, 16, 16],
                                     temporal_kernel=3, norm_groups=4)), tmp_path / "parent.safetensors")
    # A training run from it: one small step at a tiny learning rate stays next to the parent.
    train = VAETrainConfig(steps=1, batch_size=2, warmup=1, lr=1e-7, eval_every=1, eval_clips=2, heldout_every=2,
                           init_from=str(tmp_path / "parent.safetensors"))
    out = train_vae(cfg, train, carracing_data, tmp_path / "run", torch.device("cpu"))
    tuned = load_vae(out)[0].state_dict()
    drift = max(float((tuned[k].float() - v.float()).abs().max()) for k, v in parent.state_dict().items()
                if v.is_floating_point())
    assert drift < 1e-3, drift


def test_an_adversarial_decoder_run_trains_its_critic_and_resumes_it(tiny_world, carracing_data, tmp_path, capsys):
    import json

    from worldsim.checkpoint import read_checkpoint
    from worldsim.training.adversarial import PatchCritic, consecutive_pairs, critic_loss, decoder_loss
    from worldsim.training.vae_trainer import VAETrainConfig, train_vae
    from worldsim.world import load_world

    critic = PatchCritic()
    clips = torch.randn(2, 3, 3, 64, 64)
    pairs = consecutive_pairs(clips)
    assert pairs.shape == (4, 6, 64, 64) and torch.equal(pairs[1, :3], clips[0, 1]) and torch.equal(pairs[1, 3:], clips[0, 2])
    assert consecutive_pairs(clips[:, :1]).shape == (2, 6, 64, 64)
    assert critic(pairs).shape == (4, 1, 8, 8)
    assert critic_loss(torch.full((1,), 2.0), torch.full((1,), -2.0)) == 0  # both sides past the margin
    assert decoder_loss(torch.full((1,), 3.0)) == -3.0

    world_cfg = load_world(tiny_world).vae.cfg
    run = tmp_path / "run"

    def train(steps):
        tc = VAETrainConfig(steps=steps, batch_size=2, warmup=1, lr=1e-3, eval_every=2, eval_clips=2, heldout_every=2,
                            init_from=str(tiny_world), decoder_only=True, adversarial_weight=0.5, adversarial_start=1,
                            log_every=1)
        return train_vae(world_cfg, tc, carracing_data, run, torch.device("cpu"))

    train(2)
    rows = [json.loads(line) for line in (run / "vae_log.jsonl").read_text().splitlines()]
    assert "adversarial_scale" not in rows[0] and rows[1]["adversarial_scale"] > 0  # the term from step 1 on
    state = read_checkpoint(run / "vae_state.safetensors", "training-state")[1]
    first = {k: v.clone() for k, v in state.items() if k.startswith("critic.")}
    assert first
    train(4)
    assert "resumed" in capsys.readouterr().out
    state = read_checkpoint(run / "vae_state.safetensors", "training-state")[1]
    assert any(not torch.equal(state[k], v) for k, v in first.items())  # the resumed critic kept learning
