"""The benchmark runs end to end in smoke mode and writes its table as JSON (figures are not asserted)."""

import json

from worldsim.bench import main


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    result = main(["--smoke", "--json", str(out), "--iters", "3"])
    saved = json.loads(out.read_text())
    assert set(saved) == set(result) >= {"machine", "decode", "interactive", "interactive_large", "engine", "vector", "train"}
    assert {"p50_ms", "p99_ms", "fps"} <= set(saved["interactive"])
    assert {"world_steps_per_s_N1", "world_steps_per_s_N4", "native_over_sync_N4"} <= set(saved["vector"])
    assert saved["train"]["train_frames_per_s"] > 0
