import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from worldsim.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from worldsim.data.episodes import Episode, write_shard
from worldsim.models.vae import CausalVAE, VAEConfig, load_vae, save_vae

TINY = VAEConfig(encoder_channels=(8, 16, 16), decoder_channels=(8, 16, 16), norm_groups=4, latent_channels=4)


def test_vae_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    vae = CausalVAE(TINY).eval()
    save_vae(tmp_path / "vae.safetensors", vae, {"source": {"env_id": "X"}})
    back, meta = load_vae(tmp_path / "vae.safetensors")
    assert back.cfg == TINY and meta["source"] == {"env_id": "X"}
    x = torch.rand(1, 3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(back.decode(back.encode(x)), vae.decode(vae.encode(x)), rtol=0, atol=0)


def test_missing_foreign_and_wrong_kind_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*python train.py stage=vae"):
        load_vae(tmp_path / "none.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a worldsim checkpoint"):
        load_vae(tmp_path / "foreign.safetensors")
    ep = Episode(np.zeros((2, 8, 8, 3), np.uint8), np.zeros(2, np.int64), np.zeros(2, np.float32),
                 np.zeros(2, bool), np.zeros(2, bool))
    write_shard(tmp_path / "shard.safetensors", [ep], {"env_id": "X"})
    with pytest.raises(CheckpointError, match="worldsim.episodes, not a worldsim checkpoint"):
        load_vae(tmp_path / "shard.safetensors")
    save_checkpoint(tmp_path / "other.safetensors", "dynamics", {}, {"config": {}})
    with pytest.raises(CheckpointError, match="'dynamics' checkpoint, but a 'vae' checkpoint is needed"):
        load_vae(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_checkpoint(tmp_path / "junk.safetensors", "vae")


def test_weights_that_do_not_fit_are_refused(tmp_path):
    vae = CausalVAE(TINY)
    save_vae(tmp_path / "vae.safetensors", vae)
    meta, tensors = read_checkpoint(tmp_path / "vae.safetensors", "vae")
    # Same metadata, one tensor dropped and one reshaped: strict loading must say so.
    key = next(iter(tensors))
    del tensors[key]
    tensors[next(iter(tensors))] = torch.zeros(1)
    header = {"format": "worldsim.checkpoint", "version": "1", "kind": "vae", "config": __import__("json").dumps(meta["config"])}
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=header)
    with pytest.raises(CheckpointError, match="do not fit the model.*missing"):
        load_vae(tmp_path / "bad.safetensors")
