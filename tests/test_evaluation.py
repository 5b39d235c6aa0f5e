"""The evaluation harness runs on a tiny world and writes a well-formed report, plots and video."""

import json

import numpy as np
import pytest

from envs.evaluation.evaluate import EvalConfig, evaluate_world
from worldsim.metrics.image import histogram_distance, psnr_frames, ssim_frames, warp_error


def test_metrics_behave():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert np.isinf(psnr_frames(a, a)).all() or (psnr_frames(a, a) > 90).all()
    assert np.allclose(ssim_frames(a, a), 1.0)
    smooth = np.broadcast_to(np.linspace(0, 255, 32)[None, None, :, None], (3, 32, 32, 3)).astype(np.uint8)
    noisy = np.clip(smooth.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert (ssim_frames(smooth, noisy) < 0.8).all() and (psnr_frames(smooth, noisy) < 30).all()
    assert histogram_distance(a, a) == 0.0 and histogram_distance(a, np.zeros_like(a)) > 0.9
    smooth = np.stack([np.roll(np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3)), k, 1)
                       for k in range(4)])
    assert warp_error(smooth) < warp_error(a)  # moving gradient warps well; noise does not


@pytest.mark.slow
def test_eval_report_on_a_tiny_world(tiny_world, tmp_path):
    cfg = EvalConfig(out=str(tmp_path / "eval"), episodes=2, context=3, horizons=(1, 2, 4), skip=2, long_frames=20,
                     segment=10, idm_steps=3, device="cpu", second_episodes=3, second_skip_max=30, realism_steps=20,
                     memory_episodes=2)
    report = evaluate_world(tiny_world, cfg)
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["fidelity_by_horizon"].keys() == {"1", "2", "4"} and saved == json.loads(json.dumps(report))
    for h in saved["fidelity_by_horizon"].values():
        assert {"psnr", "ssim", "copy_last_psnr", "copy_last_ssim"} <= set(h)
    assert len(saved["long_horizon"]) == 2 and saved["controllability"]["classes"] == 5
    assert 0 <= saved["controllability"]["idm_accuracy_real"] <= 1
    assert 0 <= saved["controllability"]["idm_accuracy_reconstructed"] <= 1
    assert saved["warp_error"]["reconstructed"] > 0 and saved["vae_reconstruction_psnr"] > 0
    response = saved["action_response"]
    assert len(response["model"]["vs_first_action"]) == 5 and response["model"]["seed_spread"] > 0
    # The real env, replayed from each episode's seed, shows its keys' effect; the ratio compares the two.
    assert response["real"]["action_spread"] > 0 and response["model_vs_real"] >= 0
    assert set(saved["goals"]) >= {"psnr_1_step_ge_30", "no_collapse", "idm_ratio_ge_0.9",
                                   "second_driver_classifier_pairs_le_0.75", "second_driver_sharpness_within_0.9_1.1"}
    # Realism (a random tiny world: far from the real game) and the second, unseen driver from mid-track starts.
    for looks in (saved["realism"], saved["second_driver"]["realism"]):
        assert looks["sharpness_ratio"] > 0 and looks["frame_change_ratio"] > 0
        assert 0 <= looks["classifier_accuracy_frames"] <= 1 and 0 <= looks["classifier_accuracy_pairs"] <= 1
    other = saved["second_driver"]
    assert other["driver"] == "pursuit" and other["episodes"] == 3 and all(2 <= s <= 30 for s in other["starts"])
    assert other["fidelity_by_horizon"].keys() == {"1", "2", "4"}
    memory = saved["track_memory"]  # off the road and back, world vs real under the same keys
    assert memory["episodes"] == 2 and len(memory["road_iou_by_frame"]) == memory["frames"] == 80
    assert 0 <= memory["road_iou_last_10"] <= 1 and memory["road_fraction_last_10"]["real"] > 0
    heads = saved["reward_termination"]
    assert heads["reward_mae"] >= 0 and {"reward_correlation_4_frames", "return_predicted_over_real"} <= set(heads)
    for name in ("psnr_by_horizon.png", "long_horizon.png", "side_by_side.mp4"):
        assert (tmp_path / "eval" / name).stat().st_size > 0


def test_action_response_tells_a_world_that_ignores_its_keys(tiny_world):
    """Held actions from the same contexts: a world whose action inputs carry nothing shows zero spread."""
    import torch

    from worldsim.metrics.response import action_response
    from worldsim.world import load_world

    world = load_world(tiny_world)
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, 255, (2, 3, world.frame_size, world.frame_size, 3), dtype=np.uint8)
    ctx_a = np.zeros((2, 3), dtype=np.int64)
    with torch.no_grad():
        world.dit.action_embed.table.weight.normal_()
    before = action_response(world, ctx, ctx_a, frames=3, seed=0)
    assert before["action_spread"] > 0 and before["vs_first_action"][0] == 0
    with torch.no_grad():  # every action (and the null one) the same embedding: actions cannot matter
        world.dit.action_embed.table.weight.copy_(world.dit.action_embed.table.weight[:1].clone())
    after = action_response(world, ctx, ctx_a, frames=3, seed=0)
    assert after["action_spread"] == 0 and after["seed_spread"] > 0


def test_road_masks_find_carracing_roads():
    from envs.games.objects.carracing import road_iou, road_mask
    from envs.games.source import SourceConfig, SourceGame

    env = SourceGame(SourceConfig()).make_env()
    obs, _ = env.reset(seed=3)
    for _ in range(60):
        obs = env.step(3)[0]
    env.close()
    road = road_mask(obs)
    assert 0.05 < road.mean() < 0.5  # the road, not the grass or the black HUD bar
    assert road_iou(obs, obs) == 1.0 and road_iou(obs, np.full_like(obs, (100, 200, 100))) == 0.0


def test_block_sums_correlate_what_an_agent_holding_actions_is_paid():
    from envs.evaluation.heads import sum_correlation

    real = np.array([-0.1, 3.2, -0.1, -0.1, -0.1, -0.1, -0.1, -0.1, 3.2, 3.2, -0.1, -0.1])
    late = np.roll(real, 1)  # each tile paid one frame late: per frame poorly correlated, per 4 frames mostly right
    assert np.corrcoef(late, real)[0, 1] < 0.3 and sum_correlation(late, real, 4) > 0.9
    assert sum_correlation(real, real, 4) == pytest.approx(1.0) and sum_correlation(real, np.zeros(12), 4) is None


def test_a_reward_head_that_pays_the_same_on_every_frame_has_no_correlation_not_nan():
    import numpy as np

    from envs.evaluation.heads import _correlation

    real = np.array([0.0, 1.0, 0.0, -1.0])
    assert _correlation(np.zeros(4), real) is None  # a sign head that never fires
    assert _correlation(real, real) == 1.0


def test_heads_cli_scores_the_episodes_that_ended(tiny_world, tmp_path, capsys):
    """``python -m envs.evaluation.heads``: the worlds' heads on exactly the episodes that ended by termination;
    a folder without one is refused with what to record."""
    from envs.evaluation.heads import main
    from worldsim.data.episodes import Episode, write_shard

    rng = np.random.default_rng(1)

    def episode(n, ended):
        term, trunc = np.zeros(n, bool), np.zeros(n, bool)
        (term if ended else trunc)[-1] = True
        return Episode(frames=rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), actions=rng.integers(0, 5, n),
                       rewards=rng.normal(size=n).astype(np.float32), terminated=term, truncated=trunc, info={})

    source = {"env_id": "CarRacing-v3", "frame_size": 64, "fps": 50, "action_space": {"type": "Discrete", "n": 5}}
    write_shard(tmp_path / "a.safetensors", [episode(9, False), episode(7, True)], source)
    main([str(tmp_path), str(tiny_world), str(tiny_world)])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0] == lines[1]  # one line a world, deterministic
    assert lines[0]["episodes"] == 1 and lines[0]["termination_frames"] == 1
    assert 0 <= lines[0]["termination_prob_at_terminal"] <= 1
    (tmp_path / "a.safetensors").unlink()
    write_shard(tmp_path / "b.safetensors", [episode(8, False)], source)
    with pytest.raises(SystemExit, match="no episode ended by termination"):
        main([str(tmp_path), str(tiny_world)])


def test_teacher_forced_heads_read_each_frame_as_the_engine_does(tiny_world):
    """The heads on real frames see what the engine's reading call sees: a two-call world reads frame t from
    frame t itself with real frames before it (also at the start of a window: frame W reads frame W - 1), a
    one-call (commit=draft) world reads frame t from the call on frame t - 1's draft, so frame t itself cannot
    change what it is paid; the same seed reads the same."""
    from dataclasses import replace

    import torch

    from envs.evaluation.heads import teacher_forced_heads
    from worldsim.models.dit import DiT
    from worldsim.world import load_world

    world = load_world(tiny_world)
    w = world.dit.cfg.window
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (3 * w, 64, 64, 3), dtype=np.uint8)
    actions = rng.integers(0, 5, 3 * w)

    def changed(wld, k):
        other = frames.copy()
        other[k] = 255 - other[k]
        a, b = teacher_forced_heads(wld, frames, actions)[0], teacher_forced_heads(wld, other, actions)[0]
        return ~np.isclose(a, b, rtol=0, atol=1e-6)

    r0, d0 = teacher_forced_heads(world, frames, actions)
    r1, d1 = teacher_forced_heads(world, frames, actions)
    assert np.array_equal(r0, r1) and np.array_equal(d0, d1) and r0.shape == d0.shape == (3 * w,)
    diff = changed(world, w - 1)
    assert not diff[: w - 1].any() and diff[w - 1] and diff[w]  # causal, and frame W sees frame W - 1
    draft = DiT(replace(world.dit.cfg, commit="draft", draft_level=0.5), world.dit.action_space).eval()
    draft.load_state_dict(world.dit.state_dict())
    diff = changed(replace(world, dit=draft), w + 1)
    assert not diff[: w + 2].any() and diff[w + 2]  # paid for frame t on the call that drafts it from frame t - 1
    with torch.no_grad():
        assert np.isfinite(teacher_forced_heads(replace(world, dit=draft), frames, actions)[0]).all()
