"""The shipped Pong world: loads strictly, is registered, passes the env checker, the paddle follows the keys."""

import numpy as np
import pytest

from envs.games.objects.pong import find_ball, player_paddle
from envs.games.pong import DOWN, UP
from envs.worldenv.env import WorldModelEnv
from worldsim.world import checkpoints_dir, load_world

SHIPPED = checkpoints_dir() / "pong.safetensors"
pytestmark = pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped Pong world in checkpoints/")


def test_shipped_file_is_small_loads_strictly_and_is_registered():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import envs  # noqa: F401  (registers the ids)

    assert SHIPPED.stat().st_size <= 16 * 2**20
    world = load_world(SHIPPED)
    assert world.name == "pong" and world.action_space.n == 6 and len(world.context_frames) >= 4
    env = gym.make("worldsim/Pong-v0", device="cpu")
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_the_paddle_follows_the_keys_and_the_ball_stays_in_play():
    env = WorldModelEnv(world="pong", device="cpu")
    moved = {}
    for action in (UP, DOWN):
        obs, _ = env.reset(seed=0)
        start = player_paddle(obs)
        for _ in range(5):
            obs, *_ = env.step(action)
        moved[action] = player_paddle(obs) - start
    assert moved[UP] < -5 and moved[DOWN] > 5, moved  # rows grow downwards
    env.reset(seed=1)
    frames = np.stack([env.step(int(a))[0] for a in np.random.default_rng(0).integers(0, 6, 120)])
    assert find_ball(frames)[0].mean() > 0.3  # a ball in play most of the time (the real game: ~0.75)
    assert np.isnan(player_paddle(frames)).mean() < 0.1  # and the paddle stays on the court
