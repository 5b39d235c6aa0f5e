"""Training on the world's own frames: the next real frame predicted after frames the world made itself.

A world trained only on real clips sees real frames as context, but plays on its own: each frame it makes
becomes the context of the next, its small errors included, and it drifts towards what it draws best
(Boxing's worlds glue the two boxers together and never draw a punch in their own bouts, while after real
frames they do: checkpoints/wip/README.md, ``boxing-mw/``, ``boxing-lr/``). Diffusion forcing's noised context
covers noise, not the world's own kind of error.

Here (``dynamics.train.rollout_frames`` K) the world plays the last K frames but one of each clip itself, as the
engine plays them (:func:`own_frames`: the real frames before them as context, the clip's actions, its sampler),
and then learns each real frame from the first of its own on with those frames as context (:func:`rollout_loss`):
the frames that follow in the game after a run of its own, so that it learns to come back from its drift rather
than to continue it. As in scheduled sampling (Bengio et al. 2015) and DAgger (Ross et al. 2011), here for a
diffusion world; short runs keep the game's next frame a fair target for the world's context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldsim.diffusion.flow import add_noise, timesteps
from worldsim.models.dit import DiT
from worldsim.training.guidance_distill import next_frame_branches, with_branches


@torch.no_grad()
def own_frames(dit: DiT, z0: torch.Tensor, actions: torch.Tensor, null: torch.Tensor, first: int, sampler,
               gen: torch.Generator, amp=None) -> torch.Tensor:
    """The clip with its frames from ``first`` on made by the world, as the engine plays them -> (B, T, C, h, w).

    z0 (B, T, C, h, w) clean latents, actions (B, T[, ...]), null (B, T) (a reset frame's); frames before
    ``first`` (>= 1) are the real context. Each frame the world makes starts from the previous one noised to
    ``sampler.start_level`` (pure noise at 1) and takes ``sampler.steps`` Euler steps of ``sampler.shift``'s
    schedule (guided at ``sampler.guidance``); every frame before it, real or made, sits at
    ``sampler.context_level`` with the noise it entered the cache with, as the engine's cache holds it."""
    b, t = z0.shape[:2]
    dev = z0.device
    clip = z0.clone()
    ctx_noise = torch.randn(z0.shape, generator=gen).to(dev)
    ts = timesteps(sampler.steps, sampler.shift, dev) * sampler.start_level
    ctx_lv = torch.full((b, t), float(sampler.context_level), device=dev)
    no_null = torch.zeros(b, 1, dtype=torch.bool, device=dev)
    for i in range(first, t):
        context = add_noise(clip[:, :i], ctx_lv[:, :i], ctx_noise[:, :i])
        x = torch.randn(clip[:, i : i + 1].shape, generator=gen).to(dev)
        if sampler.start_level < 1.0:
            x = (1 - sampler.start_level) * clip[:, i - 1 : i] + sampler.start_level * x
        for k in range(sampler.steps):
            inputs = (torch.cat([context, x], 1), torch.cat([ctx_lv[:, :i], ts[k].expand(b, 1)], 1),
                      actions[:, : i + 1])
            v = _last_velocity(dit, inputs, torch.cat([null[:, :i], no_null], 1), amp)
            if sampler.guidance != 1.0:
                v0 = _last_velocity(dit, inputs, torch.cat([null[:, :i], ~no_null], 1), amp)
                v = v0 + sampler.guidance * (v - v0)
            x = x + (ts[k + 1] - ts[k]) * v
        clip[:, i : i + 1] = x.to(clip.dtype)
    return clip


def _last_velocity(dit: DiT, inputs: tuple, null: torch.Tensor, amp) -> torch.Tensor:
    """The DiT's velocity of the last frame of (x, levels, actions) with ``null`` -> (B, 1, C, h, w) float32."""
    with torch.autocast(inputs[0].device.type, dtype=amp, enabled=amp is not None):
        return dit(*inputs, null)[0][:, -1:].float()


def rollout_loss(dit: DiT, z0: torch.Tensor, actions: torch.Tensor, null: torch.Tensor, cfg, sampler,
                 gen: torch.Generator, amp=None) -> torch.Tensor:
    """The flow loss of real frames after the world's own: z0 (B, T, C, h, w) clean latents of a clip, actions
    (B, T[, ...]), null (B, T) -> a scalar.

    The world makes the clip's frames ``first = T - 1 - K`` to T - 2 (``cfg.rollout_frames`` K, at most T - 2)
    itself (:func:`own_frames`, no gradient); the clip so made sits at context levels in [0, ``cfg.context_max``]
    and every frame from ``first`` to T - 1 is a branch (``DiT.forward``'s: it sees the clip before it and
    itself) whose target is the real frame: from the previous frame as the world has it, noised to the
    sampler's start level (share ``cfg.distill_start_prob``: the velocity that lands on the real frame in one
    step), or from the real frame noised to a sampled level (the flow-matching velocity)."""
    b, t = z0.shape[:2]
    dev = z0.device
    k = min(cfg.rollout_frames, t - 2)
    first = t - 1 - k
    was_training = dit.training
    dit.eval()
    made = own_frames(dit, z0, actions, null, first, sampler, gen, amp)
    dit.train(was_training)
    levels = (torch.rand(b, t, generator=gen) * cfg.context_max).to(dev)
    clip_x = add_noise(made, levels, torch.randn(z0.shape, generator=gen).to(dev))
    idx = torch.arange(first, t, device=dev)
    real = z0[:, idx]
    x, blv, from_prev, noise = next_frame_branches(made[:, idx - 1], real, cfg, sampler.start_level,
                                                   cfg.distill_start_prob, gen)
    target = torch.where(from_prev[..., None, None, None], (x - real) / sampler.start_level, noise - real)
    v = with_branches(dit, clip_x, levels, actions, null, x, blv, idx, amp)[0]
    return F.mse_loss(v[:, t:].float(), target.float())
