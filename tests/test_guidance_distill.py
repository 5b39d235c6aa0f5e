"""Guidance distillation: the targets are the engine's guided velocities, and a student learns them."""

import copy
from dataclasses import replace

import torch

from worldsim.engine.kv_cache import KVCache
from worldsim.models.dit import DiT, DiTConfig
from worldsim.training.dynamics_trainer import DynamicsTrainConfig
from worldsim.training.guidance_distill import distill_loss, guided_targets

CFG = DiTConfig(latent_channels=4, latent_size=8, patch_size=2, dim=32, depth=2, heads=2, window=4, action_tokens=1)
SPACE = {"type": "Discrete", "n": 3, "start": 0}


def teacher() -> DiT:
    torch.manual_seed(0)
    m = DiT(CFG, SPACE).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def test_targets_are_the_engines_guided_velocities():
    """Each branch's target is what the engine's step computes with guidance: the frames before it in the
    KV cache, the frame itself once with its action and once with the null action."""
    m, b, t, g = teacher(), 2, 6, 2.5
    z, acts, lv = torch.randn(b, t, 4, 8, 8), torch.randint(0, 3, (b, t)), torch.rand(b, t) * 0.2
    null = torch.zeros(b, t, dtype=torch.bool)
    null[:, 0] = True
    idx = torch.tensor([3, 5])
    branches = {"x": torch.randn(b, 2, 4, 8, 8), "levels": torch.rand(b, 2), "actions": torch.randint(0, 3, (b, 2)),
                "frames": idx}
    target = guided_targets(m, {"x": z, "levels": lv, "actions": acts, "null": null}, branches, g)
    for j, i in enumerate(idx.tolist()):
        cache = KVCache(CFG.depth, b, CFG.heads, CFG.head_dim, CFG.window, CFG.tokens_per_frame)
        with torch.no_grad():
            for k in range(i):
                m.step(z[:, k : k + 1], lv[:, k : k + 1], acts[:, k : k + 1], torch.full((b,), k), cache, commit=True,
                       null=null[:, k : k + 1])
            args = (branches["x"][:, j : j + 1], branches["levels"][:, j : j + 1], branches["actions"][:, j : j + 1],
                    torch.full((b,), i), cache)
            v = m.step(*args, null=torch.zeros(b, 1, dtype=torch.bool))[0]
            v0 = m.step(*args, null=torch.ones(b, 1, dtype=torch.bool))[0]
        torch.testing.assert_close(target[:, j], (v0 + g * (v - v0))[:, 0], rtol=1e-4, atol=1e-5)


def action_effect(m: DiT, z: torch.Tensor, level: float, context: float = 0.1) -> float:
    """Mean |v(action 1) - v(action 2)| of the last frame (the others at the ``context`` level)."""
    lv = torch.full(z.shape[:2], context)
    lv[:, -1] = level
    a = torch.zeros(z.shape[:2], dtype=torch.long)
    with torch.no_grad():
        outs = [m(z, lv, a.index_fill(1, torch.tensor([z.shape[1] - 1]), k))[0][:, -1] for k in (1, 2)]
    return (outs[0] - outs[1]).abs().mean().item()


def test_the_student_learns_the_stronger_key_response():
    """Distilling guidance 3 from a teacher: the guided loss falls and the student's action effect grows
    towards three times the teacher's, at guidance 1."""
    cfg = replace(DynamicsTrainConfig(), distill_guidance=3.0, distill_branches=3, distill_start_prob=0.5)
    distil_and_check(teacher(), lambda s, t, z, acts, null, gen: distill_loss(s, t, z, acts, null, cfg, 0.5, gen), 0.1)


def distil_and_check(t_model: DiT, loss_fn, context: float) -> None:
    """150 steps of ``loss_fn(student, teacher, z, actions, null, gen) -> (guided loss, ...)`` from a copy of the
    teacher: the loss falls to under 0.3 of its start and the student's action effect (the other frames at the
    ``context`` level) grows past twice the teacher's."""
    t_model = t_model.requires_grad_(False)
    student = copy.deepcopy(t_model).train().requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    z, acts = torch.randn(4, 6, 4, 8, 8), torch.randint(0, 3, (4, 6))
    null = torch.zeros(4, 6, dtype=torch.bool)
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        guided = loss_fn(student, t_model, z, acts, null, gen)[0]
        opt.zero_grad()
        guided.backward()
        opt.step()
        losses.append(guided.item())
    before, after = action_effect(t_model, z, 0.5, context), action_effect(student.eval(), z, 0.5, context)
    assert sum(losses[-10:]) < 0.3 * sum(losses[:10])
    assert after > 2.0 * before, (before, after)


def draft_teacher() -> DiT:
    torch.manual_seed(0)
    m = DiT(replace(CFG, commit="draft", draft_level=0.5), SPACE).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def test_a_one_call_world_at_guidance_one_is_its_own_target():
    """commit=draft: the teacher's branches are laid out as the student's clip (each frame's input its previous
    frame at the draft level), so a student equal to its teacher has nothing to learn at guidance 1, and a
    guidance above 1 asks for something else."""
    from worldsim.training.guidance_distill import draft_distill_loss

    m = draft_teacher()
    z, acts = torch.randn(2, 6, 4, 8, 8), torch.randint(0, 3, (2, 6))
    null = torch.zeros(2, 6, dtype=torch.bool)
    null[:, 0] = True
    same = replace(DynamicsTrainConfig(), distill_guidance=1.0, distill_branches=4)
    with torch.no_grad():
        at_one = draft_distill_loss(m, m, z, acts, null, same, torch.Generator().manual_seed(0))[0]
        at_three = draft_distill_loss(m, m, z, acts, null, replace(same, distill_guidance=3.0),
                                      torch.Generator().manual_seed(0))[0]
    assert at_one.item() < 1e-10 and at_three.item() > 1e-6


def test_a_one_call_student_learns_the_stronger_key_response():
    """Distilling guidance 3 into a commit=draft world: the loss falls and the action's effect on the one-call
    prediction (from the previous frame at the draft level) grows towards three times the teacher's."""
    from worldsim.training.guidance_distill import draft_distill_loss

    cfg = replace(DynamicsTrainConfig(), distill_guidance=3.0, distill_branches=3)
    distil_and_check(draft_teacher(), lambda s, t, z, acts, null, gen: draft_distill_loss(s, t, z, acts, null, cfg, gen),
                     0.5)


def test_a_two_call_teacher_teaches_a_one_call_world_its_engine_step():
    """A two-call world (commit=pass) teaching a one-call student: each branch's target is the frame the two-call
    engine makes (the finished frames before it in the cache, the frame started from its previous one at the
    teacher's start level), as a velocity from the student's input at the draft level; such a teacher may teach
    a draft student, not the reverse."""
    from worldsim.training.dynamics_trainer import distillable
    from worldsim.training.guidance_distill import draft_targets

    m, b, t, g = teacher(), 2, 6, 2.0
    z, acts = torch.randn(b, t, 4, 8, 8), torch.randint(0, 3, (b, t))
    null = torch.zeros(b, t, dtype=torch.bool)
    null[:, 0] = True
    cfg = replace(DynamicsTrainConfig(), distill_guidance=g, distill_branches=3, context_max=0.0)
    x, levels, idx, target = draft_targets(m, z, acts, null, cfg, 0.5, torch.Generator().manual_seed(0),
                                           teacher_level=0.8)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x[:, 1:], 0.5 * z[:, :-1] + 0.5 * noise[:, 1:])
    for j, i in enumerate(idx.tolist()):
        frame = _engine_frame(m, z, acts, null, i, 0.2 * z[:, i - 1 : i] + 0.8 * noise[:, i : i + 1], 0.8, g, 1)
        torch.testing.assert_close(x[:, i] - 0.5 * target[:, j], frame[:, 0], rtol=1e-4, atol=1e-4)
    draft = replace(CFG, commit="draft", draft_level=0.5)
    assert distillable(CFG, draft) and distillable(draft, draft) and distillable(CFG, CFG)
    assert not distillable(draft, CFG) and not distillable(CFG, replace(draft, dim=64))


def _fine_tune(anchor_weight: float, agent: bool = False, steps: int = 200, make=teacher) -> tuple[DiT, DiT, list[float]]:
    """``steps`` of flow matching from a copy of the teacher (``make()``) on clips whose frames ignore the actions
    (the data says the keys do nothing), anchored to the teacher at ``anchor_weight`` -> (teacher, student, anchor
    losses)."""
    from types import SimpleNamespace

    from worldsim.training.dynamics_trainer import anchored_clip_loss

    t_model = make().requires_grad_(False)
    student = copy.deepcopy(t_model).train().requires_grad_(True)
    cfg = replace(DynamicsTrainConfig(), anchor_weight=anchor_weight, distill_branches=3, anchor_agent_data=False)
    gen = torch.Generator().manual_seed(0)
    b, t = 4, 6
    batch = {"latents": torch.randn(b, t, 4, 8, 8), "actions": torch.randint(0, 3, (b, t)), "start": torch.ones(b),
             "rewards": torch.zeros(b, t), "terminated": torch.zeros(b, t, dtype=torch.bool),
             "agent": torch.full((b,), agent)}
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    anchors = []
    for _ in range(steps):
        batch["actions"] = torch.randint(0, 3, (b, t), generator=gen)
        loss, parts = anchored_clip_loss(student, t_model, None, batch, cfg, SimpleNamespace(start_level=0.8), gen,
                                         torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        anchors.append(float(parts["anchor"]))
    return t_model, student.eval(), anchors


def test_an_anchored_fine_tune_keeps_the_key_response_plain_flow_matching_loses():
    """Fine-tuning on data where the keys do nothing: plain flow matching (weight 0) drives the action effect
    down; anchored to the teacher, the student keeps it. On agent-played clips with ``anchor_agent_data`` off,
    the anchor does not apply and the student learns exactly what plain flow matching does."""
    z = torch.randn(2, 6, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t_model, plain, _ = _fine_tune(0.0, agent=True)  # no clip anchored: plain flow matching
    _, anchored, anchors = _fine_tune(10.0)
    _, agent_only, agent_anchors = _fine_tune(10.0, agent=True)
    start, lost, kept = (action_effect(m, z, 0.5) for m in (t_model, plain, anchored))
    assert lost < 0.6 * start and kept > 0.8 * start and kept > 1.5 * lost, (start, lost, kept)
    assert max(agent_anchors) == 0.0 and max(anchors) > 0.0
    assert all(torch.equal(p, q) for p, q in zip(agent_only.parameters(), plain.parameters(), strict=True))


def test_the_anchor_can_hold_only_some_actions():
    """``only_actions``: the loss counts only the branches whose action is listed; all actions listed is the
    plain loss, none present is 0."""
    m, student = teacher(), copy.deepcopy(teacher())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    z, acts = torch.randn(2, 6, 4, 8, 8), torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 1, 1, 0, 0]])
    null = torch.zeros(2, 6, dtype=torch.bool)
    cfg = replace(DynamicsTrainConfig(), distill_guidance=1.0, distill_branches=3)

    def loss(only):
        return distill_loss(student, m, z, acts, null, cfg, 0.5, torch.Generator().manual_seed(0), only_actions=only)[0]

    plain = loss(None)
    torch.testing.assert_close(loss([0, 1, 2]), plain)
    assert loss([7]).item() == 0.0 and 0 < loss([1]).item() and loss([1]).item() != plain.item()


def _engine_frame(m: DiT, z, acts, null, i: int, start, level: float, g: float, steps: int) -> torch.Tensor:
    """The frame the engine makes at index ``i``: the clean frames before it in the cache, then ``steps`` guided
    Euler steps (uncommitted) from ``start`` at ``level`` down to 0 -> (B, 1, C, h, w)."""
    b = z.shape[0]
    cache = KVCache(CFG.depth, b, CFG.heads, CFG.head_dim, CFG.window, CFG.tokens_per_frame)
    x = start
    with torch.no_grad():
        for k in range(i):
            m.step(z[:, k : k + 1], torch.zeros(b, 1), acts[:, k : k + 1], torch.full((b,), k), cache, commit=True,
                   null=null[:, k : k + 1])
        for s in range(steps):
            args = (x, torch.full((b, 1), level * (1 - s / steps)), acts[:, i : i + 1], torch.full((b,), i), cache)
            v = m.step(*args, null=torch.zeros(b, 1, dtype=torch.bool))[0]
            v0 = m.step(*args, null=torch.ones(b, 1, dtype=torch.bool))[0]
            x = x - level / steps * (v0 + g * (v - v0))
    return x


def test_step_distillation_targets_land_on_the_engines_many_step_frame():
    """distill_steps K: every branch starts from its previous frame at the start level, and its target velocity,
    taken once from there, lands on the frame the engine makes in K guided Euler steps (guidance 1 and 2)."""
    from worldsim.training.guidance_distill import sampled_frames

    m, b, t = teacher(), 2, 6
    z, acts = torch.randn(b, t, 4, 8, 8), torch.randint(0, 3, (b, t))
    null = torch.zeros(b, t, dtype=torch.bool)
    null[:, 0] = True
    idx = torch.tensor([4, 5])
    clip = {"x": z, "levels": torch.zeros(b, t), "actions": acts, "null": null}
    start = 0.2 * z[:, idx - 1] + 0.8 * torch.randn(b, 2, 4, 8, 8)
    for g, steps in ((1.0, 3), (2.0, 2)):
        branches = {"x": start, "levels": torch.full((b, 2), 0.8), "actions": acts[:, idx], "frames": idx}
        frames = sampled_frames(m, clip, branches, g, steps)
        for j, i in enumerate(idx.tolist()):
            want = _engine_frame(m, z, acts, null, i, start[:, j : j + 1], 0.8, g, steps)
            torch.testing.assert_close(frames[:, j], want[:, 0], rtol=1e-4, atol=1e-4)
    # the loss's branches all start at the start level, and its target is that landing velocity
    cfg = replace(DynamicsTrainConfig(), distill_guidance=1.0, distill_branches=2, distill_steps=3, context_max=0.0)
    student = copy.deepcopy(m)
    with torch.no_grad():
        one = distill_loss(student, m, z, acts, null, replace(cfg, distill_steps=1, distill_start_prob=1.0), 0.8,
                           torch.Generator().manual_seed(0))[0]
        three = distill_loss(student, m, z, acts, null, cfg, 0.8, torch.Generator().manual_seed(0))[0]
    assert one.item() < 1e-10 < three.item()  # a one-step teacher is its own student; three steps land elsewhere


def test_a_step_distilled_student_makes_the_teachers_many_step_frame_in_one():
    """A student trained with distill_steps=4 makes, in one step from the start level, a frame closer to the
    teacher's 4-step frame than the teacher's own one step is."""
    from worldsim.training.guidance_distill import sampled_frames

    t_model = teacher().requires_grad_(False)
    student = copy.deepcopy(t_model).train().requires_grad_(True)
    cfg = replace(DynamicsTrainConfig(), distill_guidance=1.0, distill_branches=3, distill_steps=4, context_max=0.0)
    gen = torch.Generator().manual_seed(0)
    z, acts = torch.randn(4, 6, 4, 8, 8), torch.randint(0, 3, (4, 6))
    null = torch.zeros(4, 6, dtype=torch.bool)
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    for _ in range(150):
        loss = distill_loss(student, t_model, z, acts, null, cfg, 0.8, gen)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    idx = torch.tensor([3, 4, 5])
    clip = {"x": z, "levels": torch.zeros(4, 6), "actions": acts, "null": null}
    branches = {"x": 0.2 * z[:, idx - 1] + 0.8 * torch.randn(4, 3, 4, 8, 8, generator=gen),
                "levels": torch.full((4, 3), 0.8), "actions": acts[:, idx], "frames": idx}
    want = sampled_frames(t_model, clip, branches, 1.0, 4)
    teacher_one = sampled_frames(t_model, clip, branches, 1.0, 1)
    student_one = sampled_frames(student.eval(), clip, branches, 1.0, 1)
    before, after = (teacher_one - want).pow(2).mean().item(), (student_one - want).pow(2).mean().item()
    assert after < 0.5 * before, (before, after)


def test_a_one_call_world_is_anchored_on_its_own_layout():
    """commit=draft: a one-call fine-tune on new data moves the one-call prediction away from its start; anchored
    to its (draft) teacher at guidance 1, it stays at least twice as close to the teacher's prediction."""
    from worldsim.diffusion.flow import draft_inputs

    gen = torch.Generator().manual_seed(1)
    z, acts = torch.randn(2, 6, 4, 8, 8, generator=gen), torch.randint(0, 3, (2, 6), generator=gen)
    x, levels = draft_inputs(z, 0.5, torch.randn(z.shape, generator=gen))
    t_model, plain, _ = _fine_tune(0.0, agent=True, make=draft_teacher)
    _, anchored, anchors = _fine_tune(10.0, make=draft_teacher)
    with torch.no_grad():
        want = t_model(x, levels, acts)[0]
        moved, held = ((m(x, levels, acts)[0] - want).abs().mean().item() for m in (plain, anchored))
    assert held < 0.5 * moved and min(anchors) > 0.0, (moved, held)


def test_rescaled_guidance_keeps_the_unguided_frames_colours_and_still_follows_the_keys():
    """With rescaling the guided target's clean frame has, channel by channel, the mean and spread of the teacher's
    frame with the action and no guidance, while the action still changes it more than without guidance; at 0
    it is plain guidance. The trainer refuses a share outside 0-1."""
    import pytest

    from worldsim.training.guidance_distill import rescaled

    m, b, t = teacher(), 2, 6
    z, lv = torch.randn(b, t, 4, 8, 8), torch.rand(b, t) * 0.2
    null = torch.zeros(b, t, dtype=torch.bool)
    branches = {"x": torch.randn(b, 1, 4, 8, 8), "levels": torch.full((b, 1), 0.8), "frames": torch.tensor([5])}
    clip = {"x": z, "levels": lv, "actions": torch.zeros(b, t, dtype=torch.long), "null": null}

    def frame(action, scale, share):
        v = guided_targets(m, clip, {**branches, "actions": torch.full((b, 1), action)}, scale, rescale=share)
        return branches["x"] - 0.8 * v

    plain, cond = frame(1, 3.0, 0.0), frame(1, 1.0, 0.0)
    torch.testing.assert_close(plain, branches["x"] - 0.8 * guided_targets(
        m, clip, {**branches, "actions": torch.full((b, 1), 1)}, 3.0))
    full = frame(1, 3.0, 1.0)
    torch.testing.assert_close(full.mean((3, 4)), cond.mean((3, 4)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(full.std((3, 4)), cond.std((3, 4)), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(full, cond, atol=1e-4)  # the guided shape stays
    keys = (frame(1, 3.0, 1.0) - frame(2, 3.0, 1.0)).abs().mean()
    assert keys > (frame(1, 1.0, 0.0) - frame(2, 1.0, 0.0)).abs().mean()
    x = branches["x"]
    half = rescaled((x - plain) / 0.8, (x - cond) / 0.8, x, branches["levels"], 0.5)
    torch.testing.assert_close(x - 0.8 * half, (plain + full) / 2, rtol=1e-4, atol=1e-5)
    from worldsim.training.dynamics_trainer import train_dynamics
    with pytest.raises(ValueError, match="distill_rescale"):
        train_dynamics(CFG, DynamicsTrainConfig(distill_rescale=1.5, init_from="x"), None, "nowhere", "nowhere", "cpu")
