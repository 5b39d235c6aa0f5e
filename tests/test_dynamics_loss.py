"""The dynamics training loss itself: null-action dropout, the null action on reset frames, and each reward
and termination trained on the frame it belongs to."""

import numpy as np
import pytest
import torch
from torch import nn

from worldsim.models.dit import DiT, DiTConfig
from worldsim.training.dynamics_trainer import DynamicsTrainConfig, clip_loss, head_losses, symlog

SPACE = {"type": "Discrete", "n": 5, "start": 0}


def dit():
    torch.manual_seed(0)
    m = DiT(DiTConfig(latent_channels=4, latent_size=8, patch_size=4, dim=32, depth=2, heads=2, window=4), SPACE)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def batch(actions, start, t=4):
    torch.manual_seed(1)
    return {"frames": torch.randn(2, t, 4, 8, 8), "actions": torch.as_tensor(actions), "start": torch.as_tensor(start),
            "rewards": torch.zeros(2, t), "terminated": torch.zeros(2, t, dtype=torch.bool)}


def flow(model, b, **cfg):
    c = DynamicsTrainConfig(**cfg)
    gen = torch.Generator().manual_seed(3)  # same levels and noise for every call
    _, parts = clip_loss(model, lambda x: x, b, c, gen, torch.device("cpu"))
    return parts["flow"].item()


def test_null_action_dropout_hides_the_actions():
    m = dit()
    a, b = [[1, 2, 3, 4], [4, 3, 2, 1]], [[0, 0, 0, 0], [2, 2, 2, 2]]
    seen = flow(m, batch(a, [5, 5]), null_action_prob=0.0), flow(m, batch(b, [5, 5]), null_action_prob=0.0)
    hidden = flow(m, batch(a, [5, 5]), null_action_prob=1.0), flow(m, batch(b, [5, 5]), null_action_prob=1.0)
    assert seen[0] != seen[1]  # the model is told the actions
    assert hidden[0] == hidden[1]  # every action dropped: the loss cannot depend on them


def test_reset_frames_get_the_null_action():
    """A clip starting at an episode's reset frame (start 0): nothing led to frame 0, so its stored placeholder
    action must not reach the model; mid-episode (start > 0) the first frame's action does."""
    m = dit()
    a, b = [[1, 2, 3, 4], [4, 3, 2, 1]], [[3, 2, 3, 4], [0, 3, 2, 1]]  # only the first actions differ
    at_reset = flow(m, batch(a, [0, 0]), null_action_prob=0.0), flow(m, batch(b, [0, 0]), null_action_prob=0.0)
    mid = flow(m, batch(a, [7, 7]), null_action_prob=0.0), flow(m, batch(b, [7, 7]), null_action_prob=0.0)
    assert at_reset[0] == at_reset[1] and mid[0] != mid[1]


class Heads(nn.Module):
    """Predicts given rewards and termination logits, zero velocity: to test what the loss compares."""

    def __init__(self, reward, done):
        super().__init__()
        self.reward, self.done = reward, done
        self.cfg = DiTConfig(reward_space="symlog")  # the loss reads which space the reward head predicts in

    def forward(self, x, levels, actions, null):
        return torch.zeros_like(x), self.reward, self.done


def test_each_reward_and_termination_is_trained_on_its_own_frame():
    b = batch([[1, 2, 3, 4]] * 2, [3, 3])
    b["rewards"] = torch.tensor([[0.0, 3.0, -0.1, 20.0]] * 2)
    b["terminated"] = torch.tensor([[False, False, False, True]] * 2)
    aligned = Heads(symlog(b["rewards"]), torch.where(b["terminated"], 30.0, -30.0))
    w = torch.ones(2, 4)
    r_loss, d_loss = head_losses(aligned.reward, aligned.done, b, w, "cpu")
    assert r_loss.item() < 1e-8 and d_loss.item() < 1e-8
    shifted = Heads(torch.roll(aligned.reward, 1, 1), torch.roll(aligned.done, 1, 1))  # one frame late
    r_loss, d_loss = head_losses(shifted.reward, shifted.done, b, w, "cpu")
    assert r_loss.item() > 1 and d_loss.item() > 1
    # Through the training loss: frames at history levels train the heads.
    _, parts = clip_loss(aligned, lambda x: x, b, DynamicsTrainConfig(history_prob=1.0), torch.Generator(),
                         torch.device("cpu"))
    assert parts["reward_loss"].item() < 1e-8 and parts["done_loss"].item() < 1e-8


def test_recorded_rewards_belong_to_the_frame_they_led_to():
    """Data alignment: rewards[t] and frames[t] are what env.step(actions[t]) returned (replayed here)."""
    from envs.games.source import SourceConfig, SourceGame
    from envs.recording.collect import episode_seed, run_episode

    world = SourceGame(SourceConfig(max_episode_steps=12))
    env = world.make_env()
    ep = run_episode(world, env, index=3, base_seed=0)
    obs, _ = env.reset(seed=episode_seed(0, 3))
    np.testing.assert_array_equal(obs, ep.frames[0])
    assert ep.rewards[0] == 0 and len(ep) == 13
    for t in range(1, len(ep)):
        obs, reward, terminated, truncated, _ = env.step(ep.actions[t])
        np.testing.assert_array_equal(obs, ep.frames[t])
        assert np.float32(reward) == ep.rewards[t] and terminated == ep.terminated[t] and truncated == ep.truncated[t]
    env.close()


def test_a_raw_reward_head_predicts_the_mean_reward_a_symlog_one_less():
    """CarRacing pays -0.1 a frame and about +3.2 for a new tile. The best constant a head can predict for
    frames that pay either is their mean in raw space; in symlog space it decodes to well under the mean, so
    an agent's predicted returns would fall short of the real ones."""
    rewards = torch.tensor([[-0.1, -0.1, -0.1, 3.2]])
    b = {"rewards": rewards, "terminated": torch.zeros(1, 4, dtype=torch.bool)}
    grid = torch.linspace(-1.0, 2.0, 3001)
    best = {}
    for space in ("raw", "symlog"):
        losses = [head_losses(torch.full((1, 4), g.item()), torch.zeros(1, 4), b, torch.ones(1, 4), "cpu", space)[0]
                  for g in grid]
        best[space] = DiTConfig(reward_space=space).reward(grid[int(torch.stack(losses).argmin())]).item()
    assert abs(best["raw"] - rewards.mean().item()) < 2e-3
    assert best["symlog"] < 0.5 * rewards.mean().item()


def test_the_negative_weight_moves_the_best_constant_toward_the_frames_paid_less_than_zero():
    """Boxing pays +1 for a landed punch and -1 for a taken one; weighting the -1 frames up moves the constant a
    head fits toward them (three +1 frames and one -1 frame counted three times: to 0), and leaves the
    termination loss as it was."""
    rewards = torch.tensor([[1.0, 1.0, 1.0, -1.0, 0.0, 0.0]])
    b = {"rewards": rewards, "terminated": torch.zeros(1, 6, dtype=torch.bool)}
    grid = torch.linspace(-1.0, 1.0, 2001)
    best = {}
    for nw in (1.0, 3.0):
        losses = torch.stack([head_losses(torch.full((1, 6), g.item()), torch.zeros(1, 6), b, torch.ones(1, 6), "cpu",
                                          "raw", nw)[0] for g in grid])
        best[nw] = grid[int(losses.argmin())].item()
    assert abs(best[1.0] - 2 / 6) < 2e-3 and abs(best[3.0] - 0.0) < 2e-3
    d = [head_losses(torch.zeros(1, 6), torch.zeros(1, 6), b, torch.ones(1, 6), "cpu", "raw", nw)[1] for nw in (1.0, 3.0)]
    assert torch.equal(d[0], d[1])


def test_worlds_written_before_reward_space_decode_symlog():
    old = DiTConfig.from_stored({k: v for k, v in vars(DiTConfig()).items() if k != "reward_space"})
    assert old.reward_space == "symlog" == DiTConfig().reward_space
    head = torch.tensor([1.0, -2.0])
    assert torch.allclose(old.reward(head), torch.sign(head) * (head.abs().exp() - 1))
    assert torch.equal(DiTConfig(reward_space="raw").reward(head), head)


def test_latent_motion_marks_the_positions_that_change():
    from worldsim.training.dynamics_trainer import latent_motion

    z = torch.zeros(1, 4, 2, 4, 4)
    for t in range(4):
        z[0, t, 1, 1, t] = 2.0  # one object stepping right on a still background
    m = latent_motion(z, 0.5)
    assert m.shape == (1, 4, 1, 4, 4)
    assert m[0, 2, 0, 1, 1] == 1 and m[0, 2, 0, 1, 2] == 1  # where it left and where it arrived
    assert m[0, 2].sum() == 2 and m[0, 0].sum() == 2  # nothing else; the first frame takes the next change


def test_motion_weight_raises_the_loss_only_where_latents_move():
    m = dit()
    acts = [[1, 2, 3, 4], [4, 3, 2, 1]]
    still = batch(acts, [5, 5])
    still["frames"] = still["frames"][:, :1].expand(-1, 4, -1, -1, -1).clone()  # nothing moves
    assert flow(m, still, motion_weight=10.0) == flow(m, still)
    moving = batch(acts, [5, 5])
    assert flow(m, moving, motion_weight=10.0) > flow(m, moving)


def test_a_draft_model_learns_each_frame_from_its_previous_frames_draft():
    """commit=draft training: the input of frame t is frame t-1 noised to the draft level, the target frame t;
    a few steps on one clip of a moving pattern bring the one-step prediction close to the next frames."""
    from worldsim.training.dynamics_trainer import draft_clip_loss

    torch.manual_seed(0)
    m = DiT(DiTConfig(latent_channels=4, latent_size=8, patch_size=4, dim=32, depth=2, heads=2, window=4,
                      commit="draft", draft_level=0.3), SPACE)
    base = torch.randn(1, 1, 4, 8, 8)
    frames = torch.cat([torch.roll(base, k, dims=-1) for k in range(6)], 1).repeat(2, 1, 1, 1, 1)  # shifts right
    b = {"frames": frames, "actions": torch.ones(2, 6, dtype=torch.long), "start": torch.tensor([3, 3]),
         "rewards": torch.zeros(2, 6), "terminated": torch.zeros(2, 6, dtype=torch.bool)}
    cfg = DynamicsTrainConfig(null_action_prob=0.0)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for i in range(120):
        loss, parts = draft_clip_loss(m, lambda x: x, b, cfg, torch.Generator().manual_seed(i), torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = parts["flow"].item() if first is None else first
    gen = torch.Generator().manual_seed(999)
    with torch.no_grad():
        noise = torch.randn(frames.shape, generator=gen)
        x = 0.7 * torch.cat([frames[:, :1], frames[:, :-1]], 1) + 0.3 * noise
        v, _, _ = m(x, torch.full((2, 6), 0.3), b["actions"])
        pred = x - 0.3 * v
    err = ((pred - frames)[:, 1:] ** 2).mean().item()
    copy_last = ((frames[:, :-1] - frames[:, 1:]) ** 2).mean().item()
    assert parts["flow"].item() < 0.3 * first and err < 0.3 * copy_last, (first, parts["flow"].item(), err, copy_last)


def test_the_sign_reward_head_is_three_classes_fit_by_cross_entropy_and_pays_the_most_likely():
    from worldsim.models.dit import DiTConfig
    from worldsim.training.dynamics_trainer import head_losses

    cfg = DiTConfig(reward_space="sign")
    logits = torch.tensor([[[0.0, 5.0, 0.0], [4.0, 1.0, 0.0], [0.0, 1.0, 3.0]]])  # (B=1, T=3, 3)
    assert cfg.reward(logits).tolist() == [[0.0, -1.0, 1.0]]
    batch = {"rewards": torch.tensor([[0.0, -2.0, 0.5]]), "terminated": torch.zeros(1, 3)}
    right, _ = head_losses(logits, torch.zeros(1, 3), batch, torch.ones(1, 3), "cpu", "sign")
    wrong, _ = head_losses(logits.flip(-1), torch.zeros(1, 3), batch, torch.ones(1, 3), "cpu", "sign")
    assert right < wrong
    with pytest.raises(ValueError, match="sign"):
        DiTConfig(reward_space="clipped").validate()
