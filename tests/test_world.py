"""World files: one self-describing file rebuilds a world; loading is strict; errors say what to do."""

import numpy as np
import pytest
import torch

from worldsim.checkpoint import CheckpointError, save_checkpoint
from worldsim.world import known_worlds, load_world, world_path


def test_world_file_rebuilds_a_playable_world(tiny_world):
    world = load_world(tiny_world)
    assert world.name == "tiny" and world.fps == 50 and world.frame_size == 64 and world.meta["note"] == "test world"
    assert world.action_space.n == 5 and world.context_frames.dtype == np.uint8
    assert world.sampler.steps == 2 and world.dit.cfg.window == 4
    sim = world.simulator(batch=2)
    first = sim.prefill(world.context_frames[:2], world.context_actions[:2])
    assert first.shape == (2, 64, 64, 3)
    frames, rewards, done = sim.step(torch.tensor([1, 2]))
    assert frames.shape == (2, 64, 64, 3) and rewards.shape == (2,) and done.shape == (2,)


def test_weights_are_stored_in_half_precision_and_loaded_back(tiny_world):
    from safetensors import safe_open

    with safe_open(str(tiny_world), "pt") as f:
        assert f.get_tensor("dit.patch_in.weight").dtype == torch.float16
        assert f.get_tensor("contexts.frames").dtype == torch.uint8
    assert next(load_world(tiny_world).dit.parameters()).dtype == torch.float32


def test_foreign_and_missing_files_get_clear_errors(tmp_path, tiny_world):
    with pytest.raises(CheckpointError, match="stage=export"):
        load_world(tmp_path / "nope.safetensors")
    other = save_checkpoint(tmp_path / "vae.safetensors", "vae", {"m": torch.nn.Linear(2, 2)}, {})
    with pytest.raises(CheckpointError, match="'vae' checkpoint, but a 'world' checkpoint is needed"):
        load_world(other)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_world(tmp_path / "junk.safetensors")
    assert known_worlds(tiny_world.parent) == ["tiny"]
    with pytest.raises(CheckpointError, match="known worlds: tiny"):
        world_path("pong", tiny_world.parent)
