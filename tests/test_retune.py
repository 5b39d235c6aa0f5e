"""python -m worldsim.retune: a world file's stored sampler changes, its weights do not, nothing is overwritten."""

import numpy as np
import pytest
import torch
from safetensors import safe_open

from worldsim.checkpoint import CheckpointError
from worldsim.retune import main, retune
from worldsim.world import load_world


def _tensors(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_retune_changes_the_sampler_and_nothing_else(tiny_world, tmp_path):
    out = tmp_path / "w2.safetensors"
    assert main([str(tiny_world), "--window", "2", "--start-level", "0.7", "--out", str(out), "--note", "measured"]) == 0
    before, after = _tensors(tiny_world), _tensors(out)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    old, new = load_world(tiny_world), load_world(out)
    assert (new.sampler.window, new.sampler.start_level, new.sampler.steps) == (2, 0.7, old.sampler.steps)
    assert new.meta["retuned"][-1]["to"]["window"] == 2 and new.meta["retuned"][-1]["note"] == "measured"
    assert new.meta["note"] == old.meta["note"]
    # The stored window is the one the engine runs: its cache holds 2 frames, and the frames differ from the
    # trained window's once the rollout is longer than 2 frames.
    sim_old, sim_new = old.simulator(1, seed=3), new.simulator(1, seed=3)
    assert sim_new.window == 2 and sim_old.window == old.dit.cfg.window
    ctx, acts = old.context_frames[:1], old.context_actions[:1]
    moves = np.ones((1, 4), np.int64)
    assert not np.array_equal(sim_old.rollout(ctx, acts, moves), sim_new.rollout(ctx, acts, moves))


def test_retune_refuses_bad_requests(tiny_world, tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"mine")
    assert main([str(tiny_world), "--window", "2", "--out", str(out)]) == 2  # would write over a file
    assert out.read_bytes() == b"mine"
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(ValueError, match="longer than the 4 frames"):
        retune(tiny_world, tmp_path / "a.safetensors", {"window": 9})
    with pytest.raises(ValueError, match="steps must be"):
        retune(tiny_world, tmp_path / "a.safetensors", {"steps": 0})
    with pytest.raises(ValueError, match="nothing to change"):
        retune(tiny_world, tmp_path / "a.safetensors", {"steps": load_world(tiny_world).sampler.steps})
    with pytest.raises(ValueError, match="unknown sampler settings"):
        retune(tiny_world, tmp_path / "a.safetensors", {"speed": 2})
    assert not (tmp_path / "a.safetensors").exists()
    agent_like = tmp_path / "not-a-world.safetensors"
    agent_like.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError):
        retune(agent_like, tmp_path / "b.safetensors", {"window": 2})
