"""Training on the world's own frames: the frames it makes are the engine's, and the real frames after them are
what it learns."""

import json
from dataclasses import replace

import pytest
import torch
from test_guidance_distill import CFG
from test_guidance_distill import teacher as world

from worldsim.engine.kv_cache import KVCache
from worldsim.engine.sampler import SamplerConfig
from worldsim.training.dynamics_trainer import DynamicsTrainConfig
from worldsim.training.rollout_context import own_frames, rollout_loss


@pytest.mark.parametrize("sampler", [SamplerConfig(steps=1, start_level=0.8, context_level=0.2),
                                     SamplerConfig(steps=2, start_level=1.0, context_level=0.1, guidance=2.0)])
def test_the_worlds_own_frames_are_the_ones_its_engine_step_makes(sampler):
    """From the same noise, each frame the world makes after the real ones is the engine's: the frames before it in
    the KV cache at the context level, Euler steps from the previous frame noised to the start level (with guidance),
    then the finished frame committed at the context level."""
    m, b, t, first = world(), 2, CFG.window, 2
    z, acts = torch.randn(b, t, 4, 8, 8), torch.randint(0, 3, (b, t))
    null = torch.zeros(b, t, dtype=torch.bool)
    null[:, 0] = True
    made = own_frames(m, z, acts, null, first, sampler, torch.Generator().manual_seed(7))
    assert torch.equal(made[:, :first], z[:, :first])

    gen = torch.Generator().manual_seed(7)
    ctx_noise = torch.randn(z.shape, generator=gen)
    ts = torch.linspace(1, 0, sampler.steps + 1) * sampler.start_level
    cache = KVCache(CFG.depth, b, CFG.heads, CFG.head_dim, CFG.window, CFG.tokens_per_frame)
    ctx = torch.full((b, 1), sampler.context_level)
    frames = list(z[:, :first].unbind(1))
    with torch.no_grad():
        for i in range(t):
            if i >= first:
                x = torch.randn(b, 1, 4, 8, 8, generator=gen)
                if sampler.start_level < 1:
                    x = (1 - sampler.start_level) * frames[-1][:, None] + sampler.start_level * x
                for k in range(sampler.steps):
                    args = (x, ts[k].expand(b, 1), acts[:, i : i + 1], torch.full((b,), i), cache)
                    v = m.step(*args, null=torch.zeros(b, 1, dtype=torch.bool))[0]
                    if sampler.guidance != 1:
                        v0 = m.step(*args, null=torch.ones(b, 1, dtype=torch.bool))[0]
                        v = v0 + sampler.guidance * (v - v0)
                    x = x + (ts[k + 1] - ts[k]) * v
                frames.append(x[:, 0])
            fi = frames[i][:, None]
            m.step((1 - ctx) [..., None, None, None] * fi + ctx[..., None, None, None] * ctx_noise[:, i : i + 1], ctx,
                   acts[:, i : i + 1], torch.full((b,), i), cache, commit=True, null=null[:, i : i + 1])
    torch.testing.assert_close(made[:, first:], torch.stack(frames[first:], 1), rtol=1e-4, atol=1e-4)


def test_the_rollout_loss_trains_the_world_and_bad_settings_are_refused_before_any_work():
    """The loss reaches the network's weights; rollout_frames beyond the clip, a one-call world and guidance
    distillation are refused with the setting named."""
    m, b, t = world(), 2, CFG.window
    cfg = DynamicsTrainConfig(rollout_frames=2, clip_length=t)
    sampler = SamplerConfig(steps=1, start_level=0.8, context_level=0.2)
    acts, null = torch.randint(0, 3, (b, t)), torch.zeros(b, t, dtype=torch.bool)
    z = torch.randn(b, t, 4, 8, 8)
    loss = rollout_loss(m.train(), z, acts, null, cfg, sampler, torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    with pytest.raises(ValueError, match="rollout_frames"):
        from worldsim.training.dynamics_trainer import train_dynamics
        train_dynamics(CFG, replace(cfg, rollout_frames=3), sampler, "nowhere", "nowhere", "cpu")
    with pytest.raises(ValueError, match="commit=pass"):
        train_dynamics(replace(CFG, commit="draft"), cfg, sampler, "nowhere", "nowhere", "cpu")
    with pytest.raises(ValueError, match="commit=pass"):
        train_dynamics(CFG, replace(cfg, distill_guidance=2.0), sampler, "nowhere", "nowhere", "cpu")


def test_a_fine_tune_on_its_own_frames_logs_the_loss_and_records_it(tiny_world, carracing_data, tmp_path):
    from worldsim.training.dynamics_trainer import train_dynamics
    from worldsim.training.history import history_of
    from worldsim.world import load_world

    w = load_world(tiny_world)
    cfg = DynamicsTrainConfig(batch_size=2, clip_length=4, heldout_every=2, eval_every=1000, log_every=1, steps=2,
                              pre_encode=False, init_from=str(tiny_world), warmup=1, rollout_frames=2)
    run = tmp_path / "run"
    out = train_dynamics(w.dit.cfg, cfg, w.sampler, carracing_data, run, torch.device("cpu"))
    logged = [json.loads(line) for line in (run / "dynamics_log.jsonl").read_text().splitlines()]
    assert any("rollout" in e and e["rollout"] > 0 for e in logged)
    from worldsim.checkpoint import read_checkpoint
    entry = history_of(read_checkpoint(out, "dynamics")[0])[-1]
    assert entry["rollout_frames"] == 2 and entry["steps"] == [0, 2]
