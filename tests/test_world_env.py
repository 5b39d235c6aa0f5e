"""The world-model env behaves like any well-made Gymnasium env (tiny world file built in the test)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from envs.worldenv.env import WorldModelEnv
from envs.worldenv.vector_env import WorldModelVectorEnv
from worldsim.checkpoint import CheckpointError


@pytest.fixture
def env(tiny_world):
    e = WorldModelEnv(tiny_world, device="cpu", render_mode="rgb_array")
    yield e
    e.close()


def rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    return [obs] + [env.step(a)[0] for a in actions]


def test_check_env_passes(tiny_world):
    made = gym.make("worldsim/World-v0", checkpoint=str(tiny_world), device="cpu", render_mode="rgb_array")
    check_env(made.unwrapped)
    assert made.metadata["render_fps"] == 50 and made.observation_space.shape == (64, 64, 3)
    assert made.spec.max_episode_steps == made.unwrapped.max_episode_steps == 1000  # the env's own limit
    short = gym.make("worldsim/World-v0", checkpoint=str(tiny_world), device="cpu", max_episode_steps=7)
    assert short.spec.max_episode_steps == 7


def test_the_generic_id_needs_a_world_file():
    with pytest.raises(ValueError, match="needs a world file.*checkpoint=PATH.*CarRacing-v0"):
        gym.make("worldsim/World-v0", device="cpu")


def test_seeded_rollouts_replay_and_actions_matter(env):
    a = rollout(env, 3, [1, 1, 2, 3, 0])
    b = rollout(env, 3, [1, 1, 2, 3, 0])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = rollout(env, 3, [4, 4, 4, 4, 4])
    assert not np.array_equal(a[-1], c[-1])


def test_guidance_changes_the_frames(tiny_world):
    def frames(guidance):
        e = WorldModelEnv(tiny_world, device="cpu", guidance=guidance)
        return rollout(e, 3, [1, 2, 2])

    plain, guided, again = frames(1.0), frames(4.0), frames(4.0)
    np.testing.assert_array_equal(plain[0], guided[0])  # same start
    assert np.abs(plain[-1].astype(int) - guided[-1].astype(int)).mean() > 0.5
    np.testing.assert_array_equal(guided[-1], again[-1])


def test_observations_are_fresh_arrays(env):
    obs, _ = env.reset(seed=0)
    keep = obs.copy()
    obs[:] = 0
    np.testing.assert_array_equal(env.render(), keep)
    nxt = env.step(0)[0]
    assert not np.shares_memory(nxt, env.render())


def test_step_returns_predictions_and_truncates(tiny_world):
    env = WorldModelEnv(tiny_world, device="cpu", max_episode_steps=3)
    env.reset(seed=0)
    for i in range(3):
        obs, reward, terminated, truncated, info = env.step(2)
        assert obs.dtype == np.uint8 and isinstance(reward, float) and 0 <= info["termination_prob"] <= 1
        assert truncated == (i == 2)


def test_image_to_world_from_any_size(env):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    obs, info = env.reset(seed=0, options={"frames": img})
    assert obs.shape == (64, 64, 3) and info["context"] == "options" and info["context_frames"] == 1
    # The world starts from that image: its first frame is the image through the VAE, not a stored context.
    from worldsim.frames import resize_frames, to_model, to_uint8

    vae = env.unwrapped.world.vae
    with torch.no_grad():
        expect = to_uint8(vae.decode(vae.encode(to_model(resize_frames(img, 64)[None]))))[0, -1]
    assert np.abs(obs.astype(int) - expect.astype(int)).max() <= 1
    other, _ = env.reset(seed=0, options={"frames": 255 - img})
    assert np.abs(other.astype(int) - obs.astype(int)).mean() > 1
    clip = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    obs, info = env.reset(options={"frames": clip, "actions": np.array([0, 1, 1, 2, 2, 3])})
    assert info["context_frames"] == 4  # the DiT window
    assert env.step(1)[0].shape == (64, 64, 3)


@pytest.mark.parametrize("frames, error, match", [
    (np.zeros((64, 64, 3), np.float32), TypeError, "uint8"),
    (np.zeros((64, 64, 4), np.uint8), ValueError, r"\(H, W, 3\)"),
    (np.zeros((64, 64), np.uint8), ValueError, r"\(H, W, 3\)"),
])
def test_wrong_images_get_clear_errors(env, frames, error, match):
    with pytest.raises(error, match=match):
        env.reset(options={"frames": frames})


def test_bad_input_gets_clear_errors(env, tiny_world, tmp_path):
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid action 7: expected an element of Discrete\\(5\\)"):
        env.step(7)
    with pytest.raises(ValueError, match="one action per context frame"):
        env.reset(options={"frames": np.zeros((2, 64, 64, 3), np.uint8), "actions": [1]})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"image": np.zeros((64, 64, 3), np.uint8)})
    with pytest.raises(CheckpointError, match="stage=export"):
        WorldModelEnv(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="known worlds"):
        WorldModelEnv(world="no-such-world")


def test_keys_to_action_and_human_render(tiny_world):
    import pygame

    env = WorldModelEnv(tiny_world, device="cpu", render_mode="human", render_scale=2)
    keys = env.get_keys_to_action()
    assert keys[(pygame.K_LEFT,)] == 1 and all(env.action_space.contains(a) for a in keys.values())
    env.reset(seed=0)
    env.step(1)
    env.close()


def test_standard_wrappers(env, tmp_path):
    from gymnasium.wrappers import FrameStackObservation, RecordEpisodeStatistics, RecordVideo, TimeLimit

    wrapped = RecordEpisodeStatistics(TimeLimit(env, 4))
    wrapped = RecordVideo(wrapped, str(tmp_path / "videos"), episode_trigger=lambda i: True, disable_logger=True)
    wrapped = FrameStackObservation(wrapped, 3)
    obs, _ = wrapped.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3)
    done, steps = False, 0
    while not done:
        obs, _, term, trunc, info = wrapped.step(1)
        done, steps = term or trunc, steps + 1
    assert steps == 4 and info["episode"]["l"] == 4
    wrapped.close()
    assert list((tmp_path / "videos").glob("*.mp4"))


def make_vec(tiny_world, n=3, **kw):
    return gym.make_vec("worldsim/World-v0", num_envs=n, vectorization_mode="vector_entry_point",
                        checkpoint=str(tiny_world), device="cpu", **kw)


def test_vector_env_is_natively_batched(tiny_world):
    venv = make_vec(tiny_world)
    assert isinstance(venv.unwrapped, WorldModelVectorEnv) and venv.metadata["autoreset_mode"].name == "NEXT_STEP"
    obs, info = venv.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3) and info["_context"].all()
    obs, rewards, term, trunc, info = venv.step(np.array([0, 1, 2]))
    assert obs.shape == (3, 64, 64, 3) and rewards.shape == (3,) and info["_termination_prob"].all()
    with pytest.raises(ValueError, match="one action per world"):
        venv.step(np.array([0, 1]))
    with pytest.raises(ValueError, match="invalid actions"):
        venv.step(np.array([0, 1, 9]))


def test_vector_autoreset_next_step(tiny_world):
    venv = make_vec(tiny_world, max_episode_steps=2)
    venv.reset(seed=0)
    _, _, term, trunc, _ = venv.step(np.zeros(3, int))
    assert not trunc.any()
    _, _, term, trunc, _ = venv.step(np.zeros(3, int))
    assert trunc.all()
    obs, rewards, term, trunc, info = venv.step(np.zeros(3, int))  # the reset step
    assert not (term | trunc).any() and (rewards == 0).all() and info["_context"].all()
    contexts = venv.unwrapped.world.context_frames
    assert all(info["context"][i] in range(len(contexts)) for i in range(3))
    always = make_vec(tiny_world, termination_threshold=1e-9)
    always.reset(seed=0)
    assert always.step(np.zeros(3, int))[2].all()
    assert not always.step(np.zeros(3, int))[2].any()  # next step: autoreset, not terminated


def test_vector_env_when_only_some_worlds_end(tiny_world):
    """World 0 is one step ahead of world 1 (restarted after a step), so with a 3-step limit world 1 ends
    first: at its autoreset step its action is ignored (new start frame, reward 0, not ended) and world 0 goes
    on exactly as in a run where nothing ended."""

    def run(limit, actions_at_reset):
        venv = make_vec(tiny_world, n=2, max_episode_steps=limit)
        venv.reset(seed=4)
        venv.step(np.array([1, 1]))
        venv.reset(options={"reset_mask": np.array([True, False])})  # world 0 restarts; world 1 is at step 1
        out = [venv.step(np.array([2, 3])) for _ in range(2)]  # world 1 reaches its limit of 3
        out.append(venv.step(np.array([2, actions_at_reset])))  # world 1's autoreset step
        return out

    a, b, endless = run(3, 0), run(3, 4), run(100, 0)
    assert a[1][3].tolist() == [False, True]  # only world 1 truncated
    obs_a, rew_a, term_a, trunc_a, info_a = a[2]
    obs_b, rew_b = b[2][0], b[2][1]
    np.testing.assert_array_equal(obs_a[1], obs_b[1])  # world 1's action at the reset step is ignored
    assert rew_a[1] == rew_b[1] == 0 and not term_a[1] and not trunc_a[1] and info_a["_context"].tolist() == [False, True]
    assert info_a["context"][1] in range(len(tiny_world_contexts(tiny_world)))
    np.testing.assert_array_equal(obs_a[0], endless[2][0][0])  # world 0 untouched by world 1's reset
    assert rew_a[0] == endless[2][1][0]


def tiny_world_contexts(path):
    from worldsim.world import load_world

    return load_world(path).context_frames


def test_vector_partial_reset_and_per_world_images(tiny_world):
    venv = make_vec(tiny_world)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + 10 * i, 50, 3), dtype=np.uint8) for i in range(3)]
    obs, info = venv.reset(seed=1, options={"frames": images})
    assert (info["context"] == -1).all()
    before = venv.step(np.array([1, 1, 1]))[0]
    obs, info = venv.reset(options={"reset_mask": np.array([False, True, False])})
    np.testing.assert_array_equal(obs[[0, 2]], before[[0, 2]])
    assert info["_context"].tolist() == [False, True, False]
    with pytest.raises(ValueError, match="one per world"):
        venv.reset(options={"frames": images[:2]})


def test_vector_wrappers(tiny_world, tmp_path):
    from gymnasium.wrappers.vector import RecordEpisodeStatistics, RecordVideo

    venv = RecordEpisodeStatistics(make_vec(tiny_world, max_episode_steps=2, render_mode="rgb_array"))
    venv = RecordVideo(venv, str(tmp_path / "v"), episode_trigger=lambda i: True, disable_logger=True)
    venv.reset(seed=0)
    for _ in range(2):
        _, _, _, trunc, info = venv.step(np.zeros(3, int))
    assert trunc.all() and (info["episode"]["l"] == 2).all()
    venv.close()


def test_gymnasium_play_runs_the_world(tiny_world):
    import pygame
    from gymnasium.utils.play import play

    env = gym.make("worldsim/World-v0", checkpoint=str(tiny_world), device="cpu", render_mode="rgb_array")
    pygame.init()
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_LEFT))
    taken, frames = [], []

    def callback(obs, next_obs, action, reward, terminated, truncated, info):
        taken.append(int(action))
        frames.append((obs, next_obs))
        if action == 1:  # the left key reached the world: stop
            pygame.event.post(pygame.event.Event(pygame.QUIT))

    play(env, fps=1000, zoom=2, callback=callback)  # returns once the posted quit event is read
    assert taken[-1] == 1 and set(taken) <= {0, 1}  # the keymap's left key (action 1) drove the world
    assert not np.array_equal(*frames[-1])


def test_auto_dtype_is_bfloat16_only_where_the_cpu_multiplies_it(tiny_world, monkeypatch):
    import torch

    import worldsim.device as dev
    from envs.worldenv.core import WorldCore

    def dit_dtype(**kw):
        return next(WorldCore(1, tiny_world, device="cpu", **kw).world.dit.parameters()).dtype

    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: True)
    assert dit_dtype() == torch.bfloat16 and dit_dtype(dtype="float32") == torch.float32
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: False)  # emulated bf16 would be slower: float32
    assert dit_dtype() == torch.float32 and dit_dtype(dtype="bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        dit_dtype(dtype="half")
