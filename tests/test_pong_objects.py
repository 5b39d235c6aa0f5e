import numpy as np
import pytest

from envs.games.source import SourceConfig, SourceGame
from envs.recording.collect import run_episode


@pytest.fixture(scope="module")
def pong_frames():
    pytest.importorskip("ale_py")
    world = SourceGame(SourceConfig(name="pong", kind="atari", env_id="ALE/Pong-v5", env_kwargs={}, policy="driver",
                                    max_episode_steps=300))
    env = world.make_env()
    ep = run_episode(world, env, 0, 0)
    env.close()
    return ep.frames


def test_the_ball_is_found_and_a_world_without_it_is_caught(pong_frames):
    from envs.games.objects.pong import COURT_ROWS, compare, find_ball

    present, at = find_ball(pong_frames)
    assert 0.3 < present.mean() < 1  # in play most of the time, gone between points
    assert np.all((at[present, 0] >= COURT_ROWS.start) & (at[present, 0] < COURT_ROWS.stop))
    same = compare(pong_frames, pong_frames)
    assert same["ball_recall"] == 1 and same["ball_false"] == 0 and same["ball_error"] == 0
    # The same frames with the ball painted over in the court's colour: every ball is missed.
    erased = pong_frames.copy()
    for i in np.flatnonzero(present):
        r, c = at[i]
        erased[i, r - 1 : r + 2, c - 1 : c + 2] = (144, 72, 17)
    gone = compare(pong_frames, erased)
    assert gone["ball_recall"] == 0 and gone["ball_psnr"] < 30 and gone["paddle_psnr"] > 40
    # A frame late: the ball has moved, so fewer are found where they are.
    late = compare(pong_frames[1:], pong_frames[:-1])
    assert 0 < late["ball_recall"] < 0.9


def test_other_frame_sizes_are_refused():
    from envs.games.objects.pong import find_ball

    with pytest.raises(ValueError, match="64x64"):
        find_ball(np.zeros((2, 84, 84, 3), np.uint8))


def test_the_players_paddle_follows_the_keys():
    pytest.importorskip("ale_py")
    from envs.games.objects.pong import player_paddle
    from envs.games.pong import DOWN, UP

    world = SourceGame(SourceConfig(name="pong", kind="atari", env_id="ALE/Pong-v5", env_kwargs={}, policy="driver"))
    env = world.make_env()
    rows = {}
    for action in (UP, DOWN):
        obs, _ = env.reset(seed=0)
        start = player_paddle(obs)
        for _ in range(4):
            obs, *_ = env.step(action)
        rows[action] = player_paddle(obs) - start
    env.close()
    assert rows[UP] < -10 and rows[DOWN] > 10  # rows grow downwards


def test_paddle_response_tells_a_paddle_that_follows_the_keys_from_one_that_does_not():
    pytest.importorskip("ale_py")
    from envs.games.objects.pong import COURT, PADDLE_COLS, paddle_response
    from envs.games.pong import DOWN, NOOP, UP

    world = SourceGame(SourceConfig(name="pong", kind="atari", env_id="ALE/Pong-v5", env_kwargs={}, policy="driver"))
    env = world.make_env()
    actions, starts, last = [NOOP, UP, DOWN], [], []
    for seed in (0, 1, 2):
        runs = []
        for action in actions:
            obs, _ = env.reset(seed=seed)
            start = obs
            for _ in range(3):
                obs, *_ = env.step(action)
            runs.append(obs)
        starts.append(start)
        last.append(np.stack(runs))
    env.close()
    starts, last = np.stack(starts), np.stack(last)
    same = paddle_response(starts, last, last, actions)
    assert same["ratio"] == 1 and same["direction_agreement"] == 1 and same["paddle_missing"] == 0
    assert same["moved_real"][1] < 0 < same["moved_real"][2]  # up, then down
    swapped = paddle_response(starts, last[:, [0, 2, 1]], last, actions)  # a world that moves the other way
    assert swapped["ratio"] < 0 and swapped["direction_agreement"] == 0
    frozen = paddle_response(starts, np.repeat(starts[:, None], 3, 1), last, actions)  # keys do nothing
    assert frozen["ratio"] == 0 and frozen["direction_agreement"] == 0
    faded = last.copy()
    faded[..., PADDLE_COLS[1], :] = COURT  # the world lost the paddle
    lost = paddle_response(starts, faded, last, actions)
    assert lost["paddle_missing"] == 1 and lost["direction_agreement"] == 0 and lost["ratio"] is None
    with pytest.raises(ValueError, match="up"):
        paddle_response(starts, last[:, :1], last[:, :1], [NOOP])
