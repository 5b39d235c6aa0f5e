"""A decoder trained alone (``vae.train.decoder_only``) goes into a world file (``worldsim.new_decoder``): the
world's latents, its DiT and the agents that learned in it are unchanged; anything else is refused."""

import pytest
import torch
import torch.nn.functional as F

from worldsim.frames import to_model


def _recon_error(vae, frames) -> float:
    x = to_model(frames, "cpu")
    with torch.no_grad():
        return float(F.mse_loss(vae.decode(vae.encode(x)), x))


def test_a_decoder_trained_alone_keeps_the_latents_and_goes_into_the_world(tiny_world, carracing_data, tmp_path, capsys):
    from envs.agent.view import sees_through, world_vae_id
    from worldsim.data.dataset import EpisodeDataset
    from worldsim.models.vae import load_vae
    from worldsim.new_decoder import main, new_decoder
    from worldsim.training.vae_trainer import VAETrainConfig, train_vae
    from worldsim.world import load_world

    world = load_world(tiny_world)
    data = EpisodeDataset(carracing_data)
    ep = data.episode(0)
    frames = (ep["frames"] if isinstance(ep, dict) else ep.frames)[None, :8]
    before = _recon_error(world.vae, frames)

    cfg = VAETrainConfig(steps=12, batch_size=4, warmup=1, lr=3e-3, eval_every=12, eval_clips=2, heldout_every=2,
                         init_from=str(tiny_world), decoder_only=True, edge_weight=0.2, latent_noise=0.05)
    vae, _ = load_vae(train_vae(world.vae.cfg, cfg, carracing_data, tmp_path / "run", torch.device("cpu")))
    own = world.vae.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in vae.state_dict().items() if k.startswith("encoder."))
    assert any(not torch.equal(v, own[k]) for k, v in vae.state_dict().items() if k.startswith("decoder."))
    assert _recon_error(vae, frames) < before  # the decoder learned to draw these frames better

    out = new_decoder(tiny_world, tmp_path / "run" / "vae.safetensors", tmp_path / "new.safetensors", note="test")
    new = load_world(out)
    assert new.latent_id() == world.latent_id()  # the same latents: same encoder, same statistics
    assert new.vae_weights_id() != world.vae_weights_id()
    assert all(torch.equal(a, b) for a, b in zip(new.dit.state_dict().values(), world.dit.state_dict().values(), strict=True))
    assert _recon_error(new.vae, frames) < before
    assert new.meta["decoder"][0]["replaced_vae_id"] == world.vae_weights_id()
    # Agents recorded the whole-VAE id before latent ids existed, and the latent id since: both still drive it.
    for vid in (world.vae_weights_id(), world_vae_id(world)):
        assert sees_through({"vae_id": vid}, new)
    assert not sees_through({"vae_id": new.vae_weights_id()[::-1]}, new)

    with pytest.raises(FileExistsError, match="--overwrite"):
        new_decoder(tiny_world, tmp_path / "run" / "vae.safetensors", out)
    assert main([str(tiny_world), str(tmp_path / "run" / "vae.safetensors"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_a_vae_with_another_encoder_or_nothing_new_is_refused(tiny_world, tmp_path):
    from worldsim.models.vae import CausalVAE, save_vae
    from worldsim.new_decoder import new_decoder
    from worldsim.training.vae_trainer import VAETrainConfig, train_vae
    from worldsim.world import load_world

    world = load_world(tiny_world)
    torch.manual_seed(5)
    other = CausalVAE(world.vae.cfg)  # the same architecture, another encoder: other latents
    save_vae(tmp_path / "other.safetensors", other)
    with pytest.raises(ValueError, match="another encoder"):
        new_decoder(tiny_world, tmp_path / "other.safetensors", tmp_path / "x.safetensors")
    save_vae(tmp_path / "same.safetensors", world.vae)
    with pytest.raises(ValueError, match="nothing to change"):
        new_decoder(tiny_world, tmp_path / "same.safetensors", tmp_path / "x.safetensors")
    cfg = world.vae.cfg
    wider = CausalVAE(type(cfg)(**{**cfg.__dict__, "decoder_channels": (16, 16, 16)}))
    save_vae(tmp_path / "wider.safetensors", wider)
    with pytest.raises(ValueError, match="another architecture"):
        new_decoder(tiny_world, tmp_path / "wider.safetensors", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(ValueError, match="decoder_only=true trains a decoder for an existing encoder"):
        train_vae(cfg, VAETrainConfig(decoder_only=True), tmp_path, tmp_path / "run", torch.device("cpu"))
