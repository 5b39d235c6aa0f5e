"""Pre-encoded latent shards: exact, refused when stale, and training on them equals training on frames."""

import shutil

import numpy as np
import pytest
import torch

from worldsim.data.dataset import ClipDataset, EpisodeDataset
from worldsim.data.episodes import DatasetError
from worldsim.data.latents import LatentStore, encode_episode, encoder_reach, ensure_latents, vae_id
from worldsim.engine.latent_space import LatentEncoder
from worldsim.models.dit import DiT, DiTConfig
from worldsim.models.vae import CausalVAE, VAEConfig
from worldsim.training.dynamics_trainer import DynamicsTrainConfig, clip_loss


def encoder(kt=2, seed=0):
    torch.manual_seed(seed)
    vae = CausalVAE(VAEConfig(encoder_channels=(8, 16, 16), decoder_channels=(8, 16, 16), norm_groups=4,
                              latent_channels=4, temporal_kernel=kt))
    return vae.eval(), LatentEncoder(vae, {"latent_mean": [0.1] * 4, "latent_std": [2.0] * 4}, "cpu")


def test_latent_shards_round_trip_and_are_refused_when_stale(carracing_data, tmp_path):
    data_dir = tmp_path / "d"
    shutil.copytree(carracing_data, data_dir)
    data = EpisodeDataset(data_dir)
    vae, enc = encoder()
    assert encoder_reach(vae) > 1
    store = ensure_latents(data, enc, vae, "aaaa0000", log=lambda *_: None)
    ep = data.episode(1)
    whole = enc(torch.from_numpy(ep.frames)[None])[0].numpy()  # the whole episode at once
    np.testing.assert_array_equal(store.read(data.refs[1], 0, len(ep)), whole)
    chunked = encode_episode(enc, ep.frames, encoder_reach(vae), chunk=5)  # chunks with the encoder's reach
    np.testing.assert_allclose(chunked, whole, atol=1e-5, rtol=0)
    clip = ClipDataset(data, 4, "all", fields=("actions",), latents=store)[3]
    assert clip["latents"].shape == (4, 4, 16, 16) and "frames" not in clip
    # Another VAE (another id) has no latents here; the frames changing makes these stale.
    with pytest.raises(DatasetError, match="no latent shard"):
        LatentStore(data, "bbbb1111")
    assert vae_id("x", [0.0], [1.0]) != vae_id("x", [0.0], [2.0])  # statistics are part of a VAE's id
    from worldsim.data.episodes import write_shard

    first = data.shards[0]
    episodes = [first.episode(j) for j in range(len(first))]
    episodes[0].frames[5] = 255 - episodes[0].frames[5]
    write_shard(first.path, episodes, first.source)
    with pytest.raises(DatasetError, match="other frames"):
        LatentStore(EpisodeDataset(data_dir), "aaaa0000")
    logs = []
    ensure_latents(EpisodeDataset(data_dir), enc, vae, "aaaa0000", log=logs.append)  # rebuilds only that one
    assert logs and logs[0].startswith(f"encoding 1 of {len(data.shards)} shards")


@pytest.mark.parametrize("kt", [1, 3])
def test_training_on_latents_equals_training_on_frames(carracing_data, tmp_path, kt):
    """The same batch gives the same loss from stored latents as from frames encoded on the fly: for every
    clip when the encoder has no temporal reach, and for clips that start an episode otherwise."""
    data_dir = tmp_path / "d"
    shutil.copytree(carracing_data, data_dir)
    data = EpisodeDataset(data_dir)
    vae, enc = encoder(kt)
    store = ensure_latents(data, enc, vae, f"kt{kt}", log=lambda *_: None)
    with_frames = ClipDataset(data, 6, "all", stride=6)
    with_latents = ClipDataset(data, 6, "all", stride=6, fields=("actions", "rewards", "terminated", "truncated"),
                               latents=store)
    idx = [i for i in range(len(with_frames)) if kt == 1 or with_frames[i]["start"] == 0][:4]
    a = {k: torch.stack([with_frames[i][k] for i in idx]) for k in with_frames[0]}
    b = {k: torch.stack([with_latents[i][k] for i in idx]) for k in with_latents[0]}
    torch.manual_seed(0)
    dit = DiT(DiTConfig(latent_channels=4, latent_size=16, patch_size=4, dim=32, depth=2, heads=2, window=6),
              {"type": "Discrete", "n": 5, "start": 0})
    cfg = DynamicsTrainConfig(batch_size=len(idx), clip_length=6)
    la, pa = clip_loss(dit, enc, a, cfg, torch.Generator().manual_seed(1), torch.device("cpu"))
    lb, pb = clip_loss(dit, enc, b, cfg, torch.Generator().manual_seed(1), torch.device("cpu"))
    torch.testing.assert_close(lb, la, atol=1e-6, rtol=1e-6)
    assert pa["flow"] > 0
