"""The shipped Boxing world: loads strictly, is registered, passes the env checker, the white boxer follows
the keys and both boxers stay in the ring."""

import numpy as np
import pytest

from envs.games.boxing import action
from envs.games.objects.boxing import boxer_rate, find_boxers
from envs.worldenv.env import WorldModelEnv
from worldsim.world import checkpoints_dir, load_world

SHIPPED = checkpoints_dir() / "boxing.safetensors"
pytestmark = pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped Boxing world in checkpoints/")


def test_shipped_file_is_small_loads_strictly_and_is_registered():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import envs  # noqa: F401  (registers the ids)

    assert SHIPPED.stat().st_size <= 16 * 2**20
    world = load_world(SHIPPED)
    assert world.name == "boxing" and world.action_space.n == 18 and len(world.context_frames) >= 4
    env = gym.make("worldsim/Boxing-v0", device="cpu")
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


DISTILLED = checkpoints_dir() / "wip" / "boxing-gd.safetensors"


def _key_moves(env) -> dict:
    """How far the white boxer moved (rows, cols) after six steps of each direction key from one start."""
    moved = {}
    for name, (dx, dy) in {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}.items():
        obs, _ = env.reset(seed=0)
        start = find_boxers(obs)["white"][1]
        for _ in range(6):
            obs, *_ = env.step(action(dx, dy, False))
        moved[name] = find_boxers(obs)["white"][1] - start  # (rows, cols)
    return moved


@pytest.mark.slow
def test_the_white_boxer_follows_the_keys_and_both_stay_in_the_ring():
    env = WorldModelEnv(world="boxing", device="cpu")
    moved = _key_moves(env)
    assert moved["right"][1] > moved["left"][1] + 4 and moved["down"][0] > moved["up"][0] + 4, moved
    env.reset(seed=1)
    frames = np.stack([env.step(int(a))[0] for a in np.random.default_rng(0).integers(0, 18, 120)])
    assert boxer_rate(frames) > 0.9  # both boxers in the ring nearly all the time (the real game: always)


@pytest.mark.slow
@pytest.mark.skipif(not DISTILLED.exists(), reason="no guidance-distilled Boxing world in checkpoints/wip/")
def test_the_distilled_world_follows_the_keys_at_guidance_one():
    """Action guidance moved into the weights: one pass per sampling step moves the boxer as guidance 2 did."""
    env = WorldModelEnv(DISTILLED, device="cpu", guidance=1.0)
    assert env.core.sim.sampler.guidance == 1.0
    moved = _key_moves(env)
    assert moved["right"][1] > moved["left"][1] + 4 and moved["down"][0] > moved["up"][0] + 4, moved
