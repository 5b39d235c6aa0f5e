"""The benchmark runs end to end in smoke mode and writes its table as JSON (figures are not asserted)."""

import json

from envs.bench import main


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    result = main(["--smoke", "--json", str(out), "--iters", "3"])
    saved = json.loads(out.read_text())
    assert set(saved) == set(result) >= {"machine", "decode", "interactive", "interactive_large", "engine", "vector", "train"}
    assert {"p50_ms", "p99_ms", "fps"} <= set(saved["interactive"])
    assert {"world_steps_per_s_N1", "world_steps_per_s_N4", "native_over_sync_N4"} <= set(saved["vector"])
    assert saved["train"]["train_frames_per_s"] > 0


def test_real_env_rate_runs_the_source_env_at_its_frame_skip():
    from envs.bench import bench_real_env

    source = {"world": "cp", "kind": "gym", "env_id": "CartPole-v1", "frame_size": 16, "policy": "random",
              "max_episode_steps": 30, "frame_skip": 2}
    assert bench_real_env(source, steps=40) > 0  # through episode ends (CartPole falls within 40 random steps)


def test_bench_times_a_world_that_makes_each_frame_in_one_call(tmp_path):
    from worldsim.bench import random_world
    from worldsim.models.dit import DiTConfig
    from worldsim.models.vae import VAEConfig

    vae = VAEConfig(encoder_channels=(8, 16, 16), decoder_channels=(8, 16, 16), norm_groups=4, latent_channels=4)
    dit = DiTConfig(latent_channels=4, patch_size=4, dim=32, depth=2, heads=2, window=4, commit="draft")
    world = random_world(tmp_path / "draft.safetensors", dit, vae)
    result = main(["--world", str(world), "--only", "interactive", "--iters", "3"])
    # the larger DiT it also times is built from the world's config, so it makes its frames in one call too
    assert result["interactive"]["sampling_steps"] == result["interactive_large"]["sampling_steps"] == 1
