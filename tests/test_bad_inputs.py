"""Bad input gets a clear error (or simply works), never black frames, a silent cast or lost data."""

import json
import math
import os
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from envs.games.source import source_game
from envs.recording.episodes import RecordEpisodes
from envs.worldenv.env import WorldModelEnv
from envs.worldenv.vector_env import WorldModelVectorEnv
from worldsim.checkpoint import CheckpointError
from worldsim.data.dataset import EpisodeDataset
from worldsim.data.episodes import DatasetError, Episode, write_shard
from worldsim.integrity import add_checksums
from worldsim.world import load_world


def rewrite(src, dst, tensors=None, meta=None, drop=(), raw_meta=None):
    """A copy of a world file with some tensors or metadata changed, its checksums made to match (so the
    check under test is the one that must refuse it, not the checksum)."""
    with safe_open(str(src), framework="pt") as f:
        header = dict(f.metadata())
        all_tensors = {k: f.get_tensor(k) for k in f.keys()}
    all_tensors.update(tensors or {})
    for k in drop:
        del all_tensors[k]
    header.pop("checksums")
    for k, v in (meta or {}).items():
        header[k] = json.dumps(v)
    header.update(raw_meta or {})
    save_file(all_tensors, str(dst), metadata=header)
    add_checksums(dst)
    return dst


def test_a_failed_reset_needs_a_new_reset(tiny_world):
    env = WorldModelEnv(tiny_world, device="cpu")
    env.reset(seed=0)
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="actions"):
        env.reset(options={"frames": frames, "actions": np.array([0, 9, 0])})  # 9 is outside Discrete(5)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    venv = WorldModelVectorEnv(2, tiny_world, device="cpu")
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        venv.reset(options={"frames": frames, "actions": np.array([0, -1, 0])})
    with pytest.raises(gym.error.ResetNeeded):
        venv.step(np.array([0, 0]))


def test_one_action_rule_for_single_and_vector_envs(tiny_world):
    env = WorldModelEnv(tiny_world, device="cpu")
    venv = WorldModelVectorEnv(2, tiny_world, device="cpu")
    env.reset(seed=0)
    venv.reset(seed=0)
    for bad in (0.5, 1.0, "1", True, 5, -1):
        with pytest.raises(ValueError, match="invalid action"):
            env.step(bad)
        with pytest.raises(ValueError, match="invalid action"):
            venv.step(np.array([bad, bad]))
    env.step(np.int64(4))
    env.step(2)
    venv.step([1, 4])
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.array([1, 2, 3]))


def test_sampler_settings_and_devices_are_checked(tiny_world):
    for g in (math.nan, math.inf):
        with pytest.raises(ValueError, match="guidance must be a finite number"):
            WorldModelEnv(tiny_world, device="cpu", guidance=g)
    with pytest.raises(ValueError, match="device='bogus' is not a device"):
        WorldModelEnv(tiny_world, device="bogus")


def test_frames_options_and_flipped_views(tiny_world):
    env = WorldModelEnv(tiny_world, device="cpu")
    for shape in ((0, 64, 64, 3), (1, 0, 64, 3), (0, 5, 3)):
        with pytest.raises(ValueError, match="empty"):
            env.reset(options={"frames": np.zeros(shape, np.uint8)})
    with pytest.raises(TypeError, match="must be a dict"):
        env.reset(options=[1, 2])
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    a, _ = env.reset(seed=3, options={"frames": img[::-1]})  # a flipped view is valid input
    b, _ = env.reset(seed=3, options={"frames": np.ascontiguousarray(img[::-1])})
    np.testing.assert_array_equal(a, b)
    big = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    a, _ = env.reset(seed=3, options={"frames": big[:, ::-1]})
    b, _ = env.reset(seed=3, options={"frames": np.ascontiguousarray(big[:, ::-1])})
    np.testing.assert_array_equal(a, b)


def test_damaged_world_files_are_refused(tiny_world, tmp_path):
    raw = bytearray(tiny_world.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 4096] = os.urandom(4096)  # a damaged block inside the weights
    bad = tmp_path / "damaged.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="is damaged"):
        load_world(bad)
    with safe_open(str(tiny_world), framework="pt") as f:
        key = next(k for k in f.keys() if k.startswith("dit.") and f.get_tensor(k).is_floating_point())
        t = f.get_tensor(key).clone()
    t.view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_world(rewrite(tiny_world, tmp_path / "nan.safetensors", tensors={key: t}))
    with pytest.raises(CheckpointError, match="positive stds"):
        load_world(rewrite(tiny_world, tmp_path / "std.safetensors", meta={"latent_std": [0.0] * 4}))


def test_world_files_load_strictly(tiny_world, tmp_path):
    key = "dit.patch_in.weight"
    with pytest.raises(CheckpointError, match=r"missing \['patch_in.weight'\]"):
        load_world(rewrite(tiny_world, tmp_path / "missing.safetensors", drop=[key]))
    with pytest.raises(CheckpointError, match=r"unexpected \['extra.weight'\]"):
        load_world(rewrite(tiny_world, tmp_path / "extra.safetensors", tensors={"dit.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="version '2', this worldsim reads '1'"):
        load_world(rewrite(tiny_world, tmp_path / "v2.safetensors", raw_meta={"version": "2"}))
    with pytest.raises(CheckpointError, match="'vae' checkpoint, but a 'world' checkpoint is needed"):
        load_world(rewrite(tiny_world, tmp_path / "kind.safetensors", raw_meta={"kind": "vae"}))


def test_configs_that_do_not_fit_the_weights_are_refused_before_building(tiny_world, tmp_path):
    with safe_open(str(tiny_world), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    huge = json.loads(json.dumps(config))
    huge["dit"].update(dim=8192, depth=500, heads=64)  # would need ~1 TB if it were built
    t = time.perf_counter()
    with pytest.raises(CheckpointError, match="do not fit"):
        load_world(rewrite(tiny_world, tmp_path / "huge.safetensors", meta={"config": huge}))
    assert time.perf_counter() - t < 60  # refused, not allocated (generous bound: a correctness check, not a timing)
    double = json.loads(json.dumps(config))
    double["vae"]["latent_channels"] = 8
    with pytest.raises(CheckpointError, match="fit|latent statistics"):
        load_world(rewrite(tiny_world, tmp_path / "latent.safetensors", meta={"config": double}))


def test_a_file_cannot_make_worldsim_import_code(tmp_path, monkeypatch):
    (tmp_path / "evil_env_module.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="must not make worldsim import code"):
        source_game({"env_id": "evil_env_module:Env", "kind": "gym", "world": "x"})
    assert not (tmp_path / "imported").exists()


def test_generated_rollouts_do_not_mix_with_real_data(tiny_world, carracing_data, tmp_path):
    import shutil

    real = tmp_path / "real"
    shutil.copytree(carracing_data, real)
    with pytest.raises(DatasetError, match="generated by the world"):
        RecordEpisodes(WorldModelEnv(tiny_world, device="cpu"), real)
    env = RecordEpisodes(WorldModelEnv(tiny_world, device="cpu"), tmp_path / "dreams")
    env.reset(seed=0)
    env.step(1)
    env.close()
    source = EpisodeDataset(tmp_path / "dreams").source
    assert source["provenance"] == {"kind": "world", "world_file": str(tiny_world), "world": "tiny"}
    assert EpisodeDataset(real).source["provenance"]["kind"] == "real"
    env = RecordEpisodes(WorldModelEnv(tiny_world, device="cpu"), real, allow_mixed=True)  # asked for: allowed
    env.reset(seed=0)
    env.step(1)
    env.close()
    with pytest.raises(DatasetError, match="separate folders"):
        EpisodeDataset(real)
    assert len(EpisodeDataset(real, allow_mixed=True)) == len(EpisodeDataset(carracing_data)) + 1


def _episode(t=5):
    rng = np.random.default_rng(0)
    return Episode(rng.integers(0, 256, (t, 64, 64, 3), dtype=np.uint8), np.zeros(t, np.int64),
                   np.zeros(t, np.float32), np.zeros(t, bool), np.zeros(t, bool), info={"index": 0})


def test_damaged_shards_are_refused_and_old_ones_warn(tmp_path, caplog):
    path = write_shard(tmp_path / "d" / "ep0000000-0000000.safetensors", [_episode(40)], {"env_id": "X"})
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 50_000] = os.urandom(50_000)
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="is damaged"):
        EpisodeDataset(tmp_path / "d")
    # A shard written before checksums: read, with one warning line.
    old = tmp_path / "old" / "ep0000000-0000000.safetensors"
    write_shard(old, [_episode()], {"env_id": "X"})
    with safe_open(str(old), framework="np") as f:
        header = {k: v for k, v in f.metadata().items() if k != "checksums"}
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    from safetensors.numpy import save_file as save_np

    save_np(arrays, str(old), metadata=header)
    with caplog.at_level("WARNING", logger="worldsim"):
        assert len(EpisodeDataset(tmp_path / "old")) == 1
    assert len(caplog.records) == 1 and "no checksums" in caplog.records[0].getMessage()


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_shard(tmp_path / "s.safetensors", [_episode()], {"env_id": "X"})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def test_non_finite_weights_are_not_written(tmp_path):
    from worldsim.checkpoint import save_checkpoint

    m = torch.nn.Linear(2, 2)
    with torch.no_grad():
        m.weight[0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        save_checkpoint(tmp_path / "m.safetensors", "test", {"m": m}, {})
    assert not list(tmp_path.iterdir())


def test_settings_of_the_wrong_type_name_the_setting(tiny_world, tmp_path, capsys):
    """A non-numeric or fractional value where a whole number belongs is one line naming the setting, in a
    dataclass built from YAML or JSON and in retune's options."""
    from envs.agent.evaluation import AgentEvalConfig
    from envs.evaluation.evaluate import EvalConfig
    from envs.recording.collect import CollectConfig
    from worldsim.config import from_dict
    from worldsim.retune import main

    for cls, where, values, says in ((CollectConfig, "collect", {"frames": "abc"}, "collect.frames must be a whole number"),
                                     (AgentEvalConfig, "agent_eval", {"episodes": 2.5}, "agent_eval.episodes must be a whole"),
                                     (AgentEvalConfig, "agent_eval", {"deterministic": "no"}, "must be true or false"),
                                     (EvalConfig, "eval", {"horizons": [1, "x"]}, "eval.horizons must be a list of whole")):
        with pytest.raises(ValueError, match=says):
            from_dict(cls, values, where)
    assert from_dict(EvalConfig, {"guidance": 2, "horizons": [1, 4], "sampling_steps": None}).horizons == (1, 4)
    assert main([str(tiny_world), "--out", str(tmp_path / "x.safetensors"), "--steps", "2.5"]) == 2
    assert "--steps must be a whole number, got '2.5'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_py_refuses_a_value_of_the_wrong_type_in_one_line():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for args, says in ((["stage=collect", "collect.frames=abc"], "collect.frames must be a whole number, got 'abc'"),
                       (["stage=agent_eval", "agent_eval.episodes=2.5"], "agent_eval.episodes must be a whole number")):
        proc = subprocess.run([sys.executable, "train.py", *args], cwd=root, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.strip().startswith(f"error: {says}"), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_world_file_whose_name_would_leave_its_folder_is_refused(tiny_world, tmp_path):
    """A world's stored name becomes part of paths (agent files, recordings): `../../x` or `/tmp/x` in a file
    is refused when it is loaded, and a name given to look a world up is checked too."""
    from worldsim.checkpoint import read_checkpoint, save_checkpoint
    from worldsim.world import WORLD_KIND, world_path

    meta, tensors = read_checkpoint(tiny_world, WORLD_KIND)
    for k in ("format", "version", "kind"):
        meta.pop(k)
    for bad in ("../../x", "/tmp/x", "a/../../b"):
        path = save_checkpoint(tmp_path / "bad.safetensors", WORLD_KIND, {}, dict(meta, source={**meta["source"], "world": bad}),
                               tensors)
        with pytest.raises(CheckpointError, match="not a plain name"):
            load_world(path)
    for bad in ("../carracing", "/etc/passwd"):
        with pytest.raises(ValueError, match="not a plain name"):
            world_path(bad)
    ok = save_checkpoint(tmp_path / "ok.safetensors", WORLD_KIND, {}, dict(meta, source={**meta["source"], "world": "ALE/Pong-v5"}),
                         tensors)
    assert load_world(ok).name == "ALE/Pong-v5"  # world=atari names a world by its env id


def test_the_integrity_tool_rewrites_only_worldsim_files_the_user_may_write(tmp_path, capsys):
    import os

    from safetensors.numpy import save_file

    from worldsim.integrity import main

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign), metadata={"framework": "other"})
    before = foreign.read_bytes()
    assert main([str(foreign)]) == 1 and foreign.read_bytes() == before
    assert "not a worldsim file" in capsys.readouterr().err
    ours = tmp_path / "ours.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(ours), metadata={"format": "worldsim.checkpoint", "kind": "x"})
    os.chmod(ours, 0o444)
    before = ours.read_bytes()
    assert main([str(ours)]) == 1 and ours.read_bytes() == before and os.stat(ours).st_mode & 0o777 == 0o444
    assert "read-only" in capsys.readouterr().err
    os.chmod(ours, 0o644)
    assert main([str(ours)]) == 0 and "checksums added" in capsys.readouterr().out
