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
