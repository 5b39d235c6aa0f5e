"""Guidance distillation: the DiT learns to predict, with the action, what a frozen teacher predicts
under action guidance, so sampling gets guidance's stronger key response without guidance's extra work.

Action guidance at scale g replaces the velocity of the frame being generated, v(x, a), by
v(x, null) + g * (v(x, a) - v(x, null)), the null action swapped in for that frame only; it costs a
second pass per sampling step (25 instead of 35 frames/s for the CarRacing world on a 2-core CPU, when it was a
second call; since the engine runs both as variants of one call, about 1.5x the call's time there).

Each training clip of T real frames is laid out as the engine's cache holds it (every frame at a
context level, real actions), followed by ``n`` branch frames (``DiT.forward`` branches): the last n
frames again, each noised to a sampled level or — as the sampler starts a frame — the previous frame
noised to the sampler's start level. A branch sees the clip before its index and itself, exactly as
the engine's step does. The teacher predicts every branch with its action and with the null action in
one pass (2n branches); the student, with the action, learns the guided velocity. The clip's own frames
train the reward and termination heads as usual; their velocity (at context levels, where it is mostly
the unguessable noise, and unused by the sampler) is left out of the loss.

A one-call world (``commit=draft``) is distilled the same way on its own layout (:func:`draft_distill_loss`):
every frame's input is its previous frame noised to the draft level, and the engine's guided step reads the
frames before it (with their actions, as the cache holds them) and the frame itself once with its action and
once without; the student learns that guided velocity with the action, so the world follows its keys in its
one call a frame. The teacher may also be a two-call world (``commit=pass``): it then reads the frames before
each branch as its own cache holds them (finished frames at a context level) and starts the branch at its own
sampler's start level; the frame it makes is the student's target, so a two-call world (its guidance distilled or
not) becomes a one-call world in one run. (Measured on Boxing, 2026-12-06: the teacher's velocity taken at the
draft level 0.5 instead, below its start level 0.8, taught a world that moved half as much as the game.)

Step distillation (``distill_steps`` K > 1) uses the same layout: the teacher makes each branch's frame in K
Euler steps of its guided sampler from the start level (:func:`sampled_frames`, K teacher passes a training step)
and the student learns the one velocity that lands on that frame. A one-step sampler that starts from a high
level returns the mean of the frames that could follow; a frame made in several steps commits to one of them
(Boxing's punching arm, averaged away in one step: checkpoints/wip/README.md, ``boxing-mw/``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldsim.diffusion.flow import add_noise, draft_inputs, sample_levels
from worldsim.models.dit import DiT


def rescaled(guided: torch.Tensor, cond: torch.Tensor, x: torch.Tensor, levels: torch.Tensor,
             share: float) -> torch.Tensor:
    """Guidance rescaling: the guided velocity with its clean-frame prediction's per-channel mean and spread moved
    ``share`` of the way to the unguided (action-conditioned) prediction's, so guidance moves what the action
    changes without over-saturating the whole frame (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
    Steps are Flawed", sec. 3.4, there on the spread alone). guided, cond, x (B, n, C, h, w); levels (B, n) > 0."""
    s = levels.float()[..., None, None, None]
    x0g, x0c = x.float() - s * guided, x.float() - s * cond
    mg, mc = x0g.mean((3, 4), keepdim=True), x0c.mean((3, 4), keepdim=True)
    sg, sc = x0g.std((3, 4), keepdim=True), x0c.std((3, 4), keepdim=True)
    x0 = x0g + share * ((x0g - mg) * (sc / sg.clamp_min(1e-6)) + mc - x0g)
    return (x.float() - x0) / s


def guided_targets(teacher: DiT, clip: dict[str, torch.Tensor], branches: dict[str, torch.Tensor], scale: float,
                   amp=None, rescale: float = 0.0) -> torch.Tensor:
    """The teacher's guided velocity for every branch -> (B, n, C, h, w) float32.

    clip: ``x`` (B, T, C, h, w), ``levels`` (B, T), ``actions`` (B, T[, ...]), ``null`` (B, T);
    branches: ``x`` (B, n, C, h, w), ``levels`` (B, n), ``actions`` (B, n[, ...]), ``frames`` (n,) indices < T.
    ``rescale``: the share of :func:`rescaled` applied (0: plain guidance)."""
    b, t = clip["levels"].shape
    n = branches["levels"].shape[1]
    copies = 1 if scale == 1 else 2  # at scale 1 the null-action pass drops out of the guided velocity
    null = torch.arange(copies * n, device=clip["x"].device) >= n  # the second copy with the null action
    with torch.no_grad():
        v = with_branches(teacher, clip["x"], clip["levels"], clip["actions"], clip["null"],
                          torch.cat([branches["x"]] * copies, 1), torch.cat([branches["levels"]] * copies, 1),
                          branches["frames"].repeat(copies), amp, torch.cat([branches["actions"]] * copies, 1),
                          null.expand(b, -1))[0].float()
    cond = v[:, t : t + n]
    if copies == 1:
        return cond
    uncond = v[:, t + n :]
    guided = uncond + scale * (cond - uncond)
    return rescaled(guided, cond, branches["x"], branches["levels"], rescale) if rescale > 0 else guided


def sampled_frames(teacher: DiT, clip: dict[str, torch.Tensor], branches: dict[str, torch.Tensor], scale: float,
                   steps: int, amp=None, rescale: float = 0.0) -> torch.Tensor:
    """The frame the teacher's guided sampler makes from every branch in ``steps`` Euler steps, each branch from
    its own level down to 0 in equal steps (the engine's schedule at shift 1: ``steps`` calls of
    :func:`guided_targets`, the clip held as the cache holds it) -> (B, n, C, h, w) float32. Arguments as there."""
    x, level = branches["x"].float(), branches["levels"].float()
    for i in range(steps):
        now = level * (1 - i / steps)
        v = guided_targets(teacher, clip, {**branches, "x": x, "levels": now}, scale, amp, rescale)
        x = x - (level / steps)[..., None, None, None] * v
    return x


def next_frame_branches(prev: torch.Tensor, cur: torch.Tensor, cfg, start_level: float, start_prob: float,
                        gen: torch.Generator):
    """Next-frame branch inputs for frames with clean latents ``cur`` (B, n, C, h, w) after ``prev`` (the same
    shape): a share ``start_prob`` start as the sampler does, from the previous frame noised to ``start_level``, the
    others from their own frame noised to a sampled level -> (inputs, levels (B, n), from_prev (B, n), noise)."""
    b, n = cur.shape[:2]
    dev = cur.device
    levels = sample_levels(b, n, cfg.level_mean, cfg.level_std, gen).to(dev)
    from_prev = (torch.rand(b, n, generator=gen) < start_prob).to(dev)
    levels = torch.where(from_prev, torch.full_like(levels, start_level), levels)
    src = torch.where(from_prev[..., None, None, None], prev, cur)
    noise = torch.randn(src.shape, generator=gen).to(dev)
    return add_noise(src, levels, noise), levels, from_prev, noise


def with_branches(dit: DiT, clip_x: torch.Tensor, levels: torch.Tensor, actions: torch.Tensor, null: torch.Tensor,
                  x: torch.Tensor, branch_levels: torch.Tensor, idx: torch.Tensor, amp=None,
                  branch_actions: torch.Tensor | None = None, branch_null: torch.Tensor | None = None):
    """``DiT.forward`` on a clip (B, T, ...) followed by next-frame branches ``x`` (B, n, ...) at its frames ``idx``
    (n,), each seeing the clip before its frame and itself -> the DiT's outputs over T + n. The branches take the
    frame's action and not the null one unless ``branch_actions`` (B, n[, ...]) / ``branch_null`` (B, n) say."""
    b, t = levels.shape
    n = len(idx)
    dev = clip_x.device
    branch_actions = actions[:, idx] if branch_actions is None else branch_actions
    branch_null = torch.zeros(b, n, dtype=torch.bool, device=dev) if branch_null is None else branch_null
    with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
        return dit(torch.cat([clip_x, x], 1), torch.cat([levels, branch_levels], 1),
                   torch.cat([actions, branch_actions], 1), torch.cat([null, branch_null], 1),
                   frames=torch.cat([torch.arange(t, device=dev), idx]), branch=torch.arange(t + n, device=dev) >= t)


def distill_loss(dit: DiT, teacher: DiT, z0: torch.Tensor, actions: torch.Tensor, null: torch.Tensor, cfg,
                 start_level: float, gen: torch.Generator, amp=None, scale: float | None = None,
                 only_actions=None, steps: int | None = None):
    """z0 (B, T, C, h, w) clean latents of a clip, actions (B, T[, ...]), null (B, T) ->
    (guided-velocity loss on the branches, the student's reward (B, T) and termination logit (B, T) on the clip).
    ``scale``: the teacher's guidance (default ``cfg.distill_guidance``); ``only_actions``: discrete actions whose
    branches count in the loss (None: all; a batch with none of them: 0); ``steps``: the teacher's sampling steps
    (default ``cfg.distill_steps``): above 1 every branch starts from its previous frame at ``start_level`` and
    the target is the velocity that lands, in one step, on the frame the teacher makes in ``steps``."""
    steps = cfg.distill_steps if steps is None else steps
    b, t = z0.shape[:2]
    dev = z0.device
    n = min(cfg.distill_branches, t - 1)
    levels = (torch.rand(b, t, generator=gen) * cfg.context_max).to(dev)
    noise = torch.randn(z0.shape, generator=gen).to(dev)
    clip = {"x": add_noise(z0, levels, noise), "levels": levels, "actions": actions, "null": null}
    idx = torch.arange(t - n, t, device=dev)
    x, blv, _, _ = next_frame_branches(z0[:, idx - 1], z0[:, idx], cfg, start_level,
                                       cfg.distill_start_prob if steps == 1 else 1.0, gen)
    branches = {"x": x, "levels": blv, "actions": actions[:, idx], "frames": idx}
    scale = cfg.distill_guidance if scale is None else scale
    if steps == 1:
        target = guided_targets(teacher, clip, branches, scale, amp, cfg.distill_rescale)
    else:
        frame = sampled_frames(teacher, clip, branches, scale, steps, amp, cfg.distill_rescale)
        target = (branches["x"].float() - frame) / start_level
    v, reward, done = with_branches(dit, clip["x"], levels, actions, null, x, blv, idx, amp)
    if only_actions is None:
        return F.mse_loss(v[:, t:].float(), target), reward[:, :t], done[:, :t]
    if branches["actions"].is_floating_point() or branches["actions"].dim() != 2:
        raise ValueError("dynamics.train.anchor_actions names discrete actions; this world's actions are not one "
                         "integer a frame: leave it unset (null)")
    err = ((v[:, t:].float() - target) ** 2).flatten(2).mean(2)  # (B, n)
    counted = torch.isin(branches["actions"], torch.as_tensor(list(only_actions), device=dev)).float()
    return (err * counted).sum() / counted.sum().clamp_min(1.0), reward[:, :t], done[:, :t]


def draft_targets(teacher: DiT, z0: torch.Tensor, actions: torch.Tensor, null: torch.Tensor, cfg, level: float,
                  gen: torch.Generator, amp=None, teacher_level: float | None = None):
    """A clip's one-call (``commit=draft``) layout and its teacher's guided targets: z0 (B, T, C, h, w) clean
    latents, actions (B, T[, ...]), null (B, T) -> (inputs (B, T, C, h, w): frame i-1 noised to ``level``,
    their levels (B, T), the branch frames' indices (n,): the clip's last ``cfg.distill_branches``, the targets
    (B, n, C, h, w)). A draft teacher reads the same layout. A two-call teacher reads the frames before a branch
    as its cache holds them (finished frames at a context level) and starts the branch as its sampler does: the
    previous frame noised (the same noise) to ``teacher_level`` (its sampler's start level; default ``level``);
    the frame its guided sampler makes (in ``cfg.distill_steps`` Euler steps) becomes the student's target velocity
    from its own input, so the student learns the teacher's frames as played even where the two start levels differ."""
    b, t = z0.shape[:2]
    dev = z0.device
    n = min(cfg.distill_branches, t - 1)
    noise = torch.randn(z0.shape, generator=gen).to(dev)
    x, levels = draft_inputs(z0, level, noise)
    idx = torch.arange(t - n, t, device=dev)
    if teacher.cfg.commit == "draft":
        clip = {"x": x, "levels": levels, "actions": actions, "null": null}
        branches = {"x": x[:, idx], "levels": levels[:, idx], "actions": actions[:, idx], "frames": idx}
        return x, levels, idx, guided_targets(teacher, clip, branches, cfg.distill_guidance, amp, cfg.distill_rescale)
    start = level if teacher_level is None else teacher_level
    xt, lt = draft_inputs(z0, start, noise)
    ctx = (torch.rand(b, t, generator=gen) * cfg.context_max).to(dev)
    clip = {"x": add_noise(z0, ctx, torch.randn(z0.shape, generator=gen).to(dev)), "levels": ctx,
            "actions": actions, "null": null}
    branches = {"x": xt[:, idx], "levels": lt[:, idx], "actions": actions[:, idx], "frames": idx}
    frame = sampled_frames(teacher, clip, branches, cfg.distill_guidance, cfg.distill_steps, amp, cfg.distill_rescale)
    return x, levels, idx, (x[:, idx] - frame) / level


def draft_distill_loss(dit: DiT, teacher: DiT, z0: torch.Tensor, actions: torch.Tensor, null: torch.Tensor, cfg,
                       gen: torch.Generator, amp=None, teacher_level: float | None = None):
    """Guidance distillation of a ``commit=draft`` world: z0 (B, T, C, h, w) clean latents of a clip, actions
    (B, T[, ...]), null (B, T) (a reset frame's) -> (guided-velocity loss on the last ``cfg.distill_branches``
    frames, the student's reward (B, T) and termination logit (B, T) on the clip). The clip is laid out as the
    draft world trains and plays (:func:`draft_targets`); the teacher is a draft or a two-call world."""
    level = getattr(dit, "module", dit).cfg.draft_level  # DistributedDataParallel wraps the model
    x, levels, idx, target = draft_targets(teacher, z0, actions, null, cfg, level, gen, amp, teacher_level)
    dev = z0.device
    with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
        v, reward, done = dit(x, levels, actions, null)
    return F.mse_loss(v[:, idx].float(), target), reward, done
