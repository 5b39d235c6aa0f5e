"""The shipped CarRacing world: loads strictly, plays 100 frames headless, responds to the keys."""

import numpy as np
import pytest

from envs.worldenv.env import WorldModelEnv
from worldsim.world import checkpoints_dir, load_world

SHIPPED = checkpoints_dir() / "carracing.safetensors"
pytestmark = pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped world in checkpoints/")


def test_shipped_file_is_small_and_loads_strictly():
    assert SHIPPED.stat().st_size <= 16 * 2**20
    world = load_world(SHIPPED)
    assert world.name == "carracing" and world.action_space.n == 5 and len(world.context_frames) >= 4


@pytest.mark.slow
def test_plays_100_frames_and_responds_to_actions():
    env = WorldModelEnv(world="carracing", device="cpu")
    env.reset(seed=0)
    frames, rewards = [], []
    for t in range(100):
        obs, reward, _, _, info = env.step(3 if t % 20 < 15 else 1)
        frames.append(obs)
        rewards.append(reward)
        assert np.isfinite(reward) and np.isfinite(info["termination_prob"])
    frames = np.stack(frames)
    assert frames.std() > 5 and np.abs(np.diff(frames.astype(int), axis=0)).mean() > 0.1  # not blank, not frozen

    def drive(action):
        env.reset(seed=1)
        return np.stack([env.step(action)[0] for _ in range(15)]).astype(int)

    # Same seed, same noise: any difference comes from the actions (a model that ignored them gives 0).
    # The CPU-trained world responds weakly (checkpoints/README.md), so the bar is "clearly nonzero".
    left, right = drive(1), drive(2)
    assert np.abs(left - right).mean() > 0.05 and np.abs(left[-1] - right[-1]).max() >= 10


def test_shipped_world_makes_each_frame_in_one_network_call():
    """Issue 37: the shipped CarRacing world is a one-call world (commit=draft, guidance in its weights), so a
    frame costs one DiT pass, not a sampling pass plus a commit pass."""
    env = WorldModelEnv(world="carracing", device="cpu")
    sim = env.core.sim
    assert sim.dit.cfg.commit == "draft" and sim.sampler.steps == 1 and sim.sampler.guidance == 1.0
    env.reset(seed=0)
    calls = []
    step = sim._step
    sim._step = lambda *a, **k: calls.append(k.get("commit", False)) or step(*a, **k)
    for _ in range(5):
        env.step(3)
    assert calls == [True] * 5  # one pass a frame, and it is the pass that writes the frame into the cache
