"""The sampler sweep scores each setting on held-out clips: PSNR by horizon and the key response."""

from worldsim.sampler_sweep import main


def test_sweep_reports_psnr_and_key_response_per_setting(tiny_world, carracing_data):
    rows = main(["--world", str(tiny_world), "--data", str(carracing_data), "--steps", "1,2", "--start-level", "1.0,0.5",
                 "--clips", "2", "--context", "3", "--horizon", "4", "--skip", "0", "--response-frames", "2",
                 "--heldout-every", "2"])
    assert [(r["steps"], r["start_level"]) for r in rows] == [(1, 1.0), (1, 0.5), (2, 1.0), (2, 0.5)]
    for r in rows:
        assert {"psnr@1", "psnr@4", "copy@4", "change_last"} <= set(r)
        assert r["key_spread"] > 0 and r["noise_spread"] > 0  # the tiny world's keys and seeds both change frames
    # Starting from the previous frame keeps more of it: less change between seeds than from pure noise.
    assert rows[1]["noise_spread"] < rows[0]["noise_spread"]
