"""Boxing's boxers read from frames: real frames agree with themselves; a lost or misplaced boxer is caught; a
soft world that draws boxers without their punching arms is caught."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def boxing_frames():
    pytest.importorskip("ale_py")
    from envs.games.source import SourceConfig, SourceGame
    from envs.recording.collect import run_episode

    world = SourceGame(SourceConfig(name="boxing", kind="atari", env_id="ALE/Boxing-v5", env_kwargs={},
                                    policy="driver", max_episode_steps=200))
    env = world.make_env()
    ep = run_episode(world, env, 0, 0)
    env.close()
    return ep.frames[20:]


def test_both_boxers_are_found_and_follow_the_game(boxing_frames):
    from envs.games.objects.boxing import boxer_rate, compare, find_boxers

    found = find_boxers(boxing_frames)
    assert boxer_rate(boxing_frames) == 1.0  # both boxers are in the ring all bout
    white, black = found["white"][1], found["black"][1]
    assert np.abs(white - black).max() > 5  # two different objects, not one blob found twice
    same = compare(boxing_frames, boxing_frames)
    assert same["white_recall"] == same["black_recall"] == 1.0 and same["white_iou"] == 1.0
    late = compare(boxing_frames[8:], boxing_frames[:-8])  # the boxers move: eight frames late is not the game
    assert late["white_iou"] < 0.5 and late["black_iou"] < 0.5


def test_a_world_that_loses_a_boxer_is_caught(boxing_frames):
    from envs.games.objects.boxing import RING, boxer_rate, compare

    gone = boxing_frames.copy()
    ring = gone[:, RING[0], RING[1]]
    ring[ring.max(-1) < 60] = (110, 156, 66)  # paint the black boxer over with the ring's green
    gone[:, RING[0], RING[1]] = ring
    out = compare(boxing_frames, gone)
    assert out["black_recall"] == 0.0 and out["white_recall"] == 1.0 and boxer_rate(gone) == 0.0
    with pytest.raises(ValueError, match="uint8"):
        compare(boxing_frames.astype(np.float32), boxing_frames.astype(np.float32))


def test_punches_are_read_and_a_soft_world_without_arms_is_caught(boxing_frames):
    from envs.evaluation.goals import punches_drawn
    from envs.games.objects.boxing import boxer_rate, punch_rates

    real = punch_rates(boxing_frames)
    assert real["in_reach"] > 100  # the driver closes in and trades punches
    assert real["white"] > 0.1 and real["black"] > 0.05
    x = np.pad(boxing_frames.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    soft = (sum(x[:, i : i + 64, j : j + 64] for i in range(3) for j in range(3)) / 9).round().astype(np.uint8)
    assert boxer_rate(soft) > 0.9  # the bodies are still found ...
    blurred = punch_rates(soft)
    assert blurred["white"] < 0.05 and blurred["black"] < 0.05  # ... but the one-pixel arms are gone
    assert punches_drawn({"real": real, "generated": real})
    assert not punches_drawn({"real": real, "generated": blurred})
