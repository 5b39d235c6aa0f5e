"""The inference engine: ``prefill(context)`` then ``step(actions)`` for a batch of B worlds.

Each step samples the next latent frame with a few Euler steps of the flow
(optionally with action guidance: the frame with and without its action, as two
variants of one call against the same cache for a few worlds), commits the finished frame's keys/values to
the windowed KV cache at the context noise level, and streams the new frame
through the VAE decoder. Rewards and termination come from the commit pass.
A world trained with ``commit=draft`` (DiTConfig) does it in one call: the
frame's denoising input is what the cache keeps.
"""

from __future__ import annotations

import numpy as np
import torch

from worldsim.device import cache_dtype
from worldsim.diffusion.flow import add_noise, timesteps
from worldsim.engine.kv_cache import KVCache
from worldsim.engine.latent_space import LatentNorm
from worldsim.engine.sampler import SamplerConfig
from worldsim.frames import check_frames, to_model, to_uint8
from worldsim.models.causal_conv import StreamCache
from worldsim.models.dit import DiT
from worldsim.models.vae import CausalVAE
from worldsim.spaces import action_array_spec, space_from_dict

FOLD_GUIDANCE_MAX_BATCH = 4
"""Largest batch whose guided steps run both variants in one call. On a 2-core AVX2 CPU (Boxing, guidance 2, the
two ways alternated step by step: ``python benchmarks/guidance_fold.py``) one call took 0.88-0.89 of two calls' time
for one world and 0.94 for four; at 16 worlds 0.89-1.04 across runs, at 64 1.03-1.18 (BENCHMARKS.md, 2026-12-08)."""


class Simulator:
    """B worlds generated frame by frame. All tensors stay on the models' device."""

    def __init__(
        self, dit: DiT, vae: CausalVAE, batch: int, sampler: SamplerConfig | None = None,
        latent_mean: torch.Tensor | None = None, latent_std: torch.Tensor | None = None, seed: int = 0,
        compile: bool = False, fold_guidance: bool | None = None,
    ) -> None:
        """``compile``: run the DiT step through ``torch.compile`` (fixed shapes, so it compiles once per
        variant; the first steps are slow while it compiles). Same frames as eager, within float rounding.
        ``fold_guidance``: run a guided step's two variants (with and without the action) in one call (True) or
        in two (False); None: one call up to ``FOLD_GUIDANCE_MAX_BATCH`` worlds. The same frames either way,
        within float rounding."""
        self.dit, self.vae, self.batch = dit.eval(), vae.eval(), batch
        self.sampler = sampler or SamplerConfig()
        p = next(dit.parameters())
        self.device, self.dtype = p.device, p.dtype
        c = dit.cfg
        self.norm = LatentNorm(latent_mean, latent_std, c.latent_channels, self.device)
        self.cache_dtype = cache_dtype(self.device, self.dtype)
        self.window = self.sampler.fit(c.window)
        if c.commit == "draft" and self.sampler.steps != 1:
            raise ValueError(f"this world makes each frame in one call (commit=draft): it samples in 1 step, not "
                             f"{self.sampler.steps}")
        # A guided step runs the frame with and without its action as two variants of one call where that is
        # faster (a few worlds: per-call overhead dominates), as two calls in a larger batch (where the work itself
        # dominates and one call's per-variant attention mask costs extra). The cache then has two scratch slots
        # (the sampler's guidance may be changed between steps, so it is always ready).
        self.fold_guidance = batch <= FOLD_GUIDANCE_MAX_BATCH if fold_guidance is None else fold_guidance
        self.cache = KVCache(c.depth, batch, c.heads, c.head_dim, self.window, c.tokens_per_frame, self.cache_dtype,
                             self.device, variants=2 if self.fold_guidance else 1)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.t = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.stream = StreamCache()
        self.ready = False  # True once every world has been started by prefill
        self.last: torch.Tensor | None = None  # (B, 1, C, h, w): each world's latest latent frame
        self._ts, self._ts_key = None, None
        shape, dtype = action_array_spec(space_from_dict(dit.action_space))
        self.action_shape, self.action_dtype = shape, torch.float32 if dtype.kind == "f" else torch.long
        self._step = torch.compile(dit.step, dynamic=False) if compile else dit.step
        # Constant per batch: built once, not in every frame step.
        self.no_null = torch.zeros(batch, 1, dtype=torch.bool, device=self.device)
        self.null_pair = torch.cat([self.no_null, ~self.no_null], 1)  # guidance's two variants: with, without action
        self.undecoded = torch.zeros(batch, dtype=torch.bool)  # worlds stepped without decode since their prefill

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.generator, device=self.device, dtype=like.dtype)

    def _levels(self, value: float) -> torch.Tensor:
        return torch.full((self.batch, 1), value, device=self.device, dtype=self.dtype)

    @torch.inference_mode()
    def prefill(
        self, frames: np.ndarray | torch.Tensor, actions: torch.Tensor | np.ndarray | None = None,
        worlds: torch.Tensor | np.ndarray | None = None,
    ) -> np.ndarray:
        """Start worlds from context frames uint8 (N, T, H, W, 3) and the actions (N, T[, ...]) that led
        to them (None: the null action). ``worlds``: which N of the B worlds restart (bool mask (B,) or
        indices); None = all B, and the first call must start all. The other worlds keep going untouched.
        Returns the last context frame of each started world, as decoded: uint8 (N, H, W, 3)."""
        frames = np.asarray(frames)
        if frames.ndim != 5:
            raise ValueError(f"context must be uint8 (B, T, H, W, 3), got shape {frames.shape}")
        check_frames(frames[0], "context frames")
        idx = self._worlds(worlds)
        n, t = frames.shape[:2]
        if n != len(idx):
            raise ValueError(f"context has {n} worlds, this simulator runs {self.batch}" if worlds is None
                             else f"context has {n} worlds, but {len(idx)} worlds are to be started")
        if worlds is not None and not self.ready:
            raise RuntimeError("the first prefill starts all worlds (worlds=None); later ones may restart some")
        # Encode a few worlds at a time: a batch of 256 contexts at once would hold gigabytes of activations.
        chunk = max(1, 64 // max(1, t))
        z = torch.cat([self.vae.encode(to_model(frames[i : i + chunk], self.device)) for i in range(0, n, chunk)])
        z = self.norm.normalize(z)  # (N, T, C, h, w)
        null = actions is None
        if null:
            actions = torch.zeros(n, t, *self.action_shape, device=self.device, dtype=self.action_dtype)
        actions = torch.as_tensor(actions, device=self.device)
        c = self.dit.cfg
        full = n == self.batch
        cache = self.cache if full else KVCache(c.depth, n, c.heads, c.head_dim, self.window, c.tokens_per_frame,
                                                self.cache_dtype, self.device, variants=self.cache.variants)
        cache.reset()
        stream, clock = StreamCache(), torch.zeros(n, dtype=torch.long, device=self.device)
        draft = c.commit == "draft"  # each context frame enters as the draft of it: its previous frame, noised
        ctx = torch.full((n, 1), c.draft_level if draft else self.sampler.context_level, device=self.device,
                         dtype=self.dtype)
        out = None
        for i in range(t):
            src = z[:, max(i - 1, 0) : max(i - 1, 0) + 1] if draft else z[:, i : i + 1]
            zi = add_noise(src, ctx, self._noise(src))
            mask = torch.full((n, 1), null or i == 0, device=self.device)
            self.dit.step(zi.to(self.dtype), ctx, actions[:, i : i + 1], clock, cache, commit=True, null=mask)
            out = self.vae.decode(self.norm.denormalize(z[:, i : i + 1]), stream)
            clock += 1
        self.undecoded[idx.cpu()] = False
        if full:
            self.stream, self.t = stream, clock
            self.last = z[:, -1:].to(self.dtype).clone()
        else:
            self.cache.load(idx, cache)
            self.stream.merge(stream, idx)
            self.t[idx] = clock
            self.last[idx] = z[:, -1:].to(self.dtype)
        self.ready = True
        return to_uint8(out[:, -1])

    def _worlds(self, worlds) -> torch.Tensor:
        """A bool mask (B,) or indices -> sorted unique indices (N,) long on the device."""
        if worlds is None:
            return torch.arange(self.batch, device=self.device)
        w = torch.as_tensor(np.asarray(worlds), device=self.device)
        if w.dtype == torch.bool:
            if w.shape != (self.batch,):
                raise ValueError(f"a world mask must have shape ({self.batch},), got {tuple(w.shape)}")
            w = w.nonzero()[:, 0]
        w = w.long().flatten()
        if len(w) and (w.min() < 0 or w.max() >= self.batch or len(w.unique()) != len(w)):
            raise ValueError(f"world indices must be distinct and in 0..{self.batch - 1}, got {w.tolist()}")
        return w

    def rollout(self, frames: np.ndarray, context_actions, actions) -> np.ndarray:
        """Open loop: start all B worlds from context frames uint8 (B, T, H, W, 3) with their actions
        (B, T[, ...]), then apply ``actions`` (B, K[, ...]) -> generated frames uint8 (B, K, H, W, 3)."""
        self.prefill(frames, context_actions)
        acts = torch.as_tensor(np.array(actions))  # a copy: the caller may pass a read-only view
        return np.stack([self.step(acts[:, k])[0] for k in range(acts.shape[1])], 1)

    def _timesteps(self) -> torch.Tensor:
        """The levels one frame's sampling visits, cached per sampler (it may be changed between steps)."""
        s = self.sampler
        key = (s.steps, s.shift, s.start_level)
        if self._ts_key != key:
            ts = timesteps(s.steps, s.shift, self.device)
            self._ts, self._ts_key = ts * s.start_level, key
        return self._ts

    def _velocity(self, x: torch.Tensor, level: torch.Tensor, a: torch.Tensor, commit: bool = False):
        """The velocity of x (B, 1, C, h, w) at level (B, 1) after actions a, under the sampler's guidance, with the
        reward and termination logits of the pass with the action (B, 1[, 3]). Guided, the null-action pass runs as
        a second variant of the same call (:attr:`fold_guidance`) or as a call before it; either way the pass with
        the action never sees it and, with ``commit``, only the pass with the action enters the cache."""
        g, call = self.sampler.guidance, (self.t, self.cache)
        if g == 1.0:
            return self._step(x, level, a, *call, commit=commit, null=self.no_null)
        if self.fold_guidance:
            v, reward, done = self._step(torch.cat([x, x], 1), level.expand(-1, 2), torch.cat([a, a], 1), *call,
                                         commit=commit, null=self.null_pair)
            (v, v0), reward, done = v.chunk(2, dim=1), reward[:, :1], done[:, :1]
        else:
            v0 = self._step(x, level, a, *call, null=~self.no_null)[0]
            v, reward, done = self._step(x, level, a, *call, commit=commit, null=self.no_null)
        return v0 + g * (v - v0), reward, done

    def _sample_and_commit(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``commit=pass``: the sampler's Euler steps, then a pass over the finished frame that writes it to the
        cache. -> the new latent (B, 1, C, h, w), reward and termination logits (B, 1)."""
        s, c = self.sampler, self.dit.cfg
        x = torch.randn((self.batch, 1, c.latent_channels, c.latent_size, c.latent_size), generator=self.generator,
                        device=self.device, dtype=self.dtype)
        ts = self._timesteps()
        if s.start_level < 1.0:  # start from the previous frame, partly noised
            x = (1 - s.start_level) * self.last + s.start_level * x
        for k in range(s.steps):
            x = x + (ts[k + 1] - ts[k]) * self._velocity(x, ts[k].expand(self.batch, 1).to(self.dtype), a)[0]
        # The finished frame enters the cache slightly noised; this pass also reads reward and termination.
        ctx = self._levels(s.context_level)
        _, reward, done = self._step(add_noise(x, ctx, self._noise(x)), ctx, a, self.t, self.cache, commit=True,
                                     null=self.no_null)
        return x, reward, done

    def _draft(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``commit=draft``: one call denoises the previous frame's draft (it noised to ``draft_level``) in one
        step, writes that draft to the cache and reads reward and termination (with action guidance, the draft
        with the null action runs too, unseen by the guided one and not kept by the cache: :meth:`_velocity`).
        -> as :meth:`_sample_and_commit`."""
        s, level = self.sampler, self.dit.cfg.draft_level
        if s.steps != 1:
            raise ValueError(f"this world makes each frame in one call (commit=draft): it samples in 1 step, not "
                             f"{s.steps}")
        x = (1 - level) * self.last + level * self._noise(self.last)
        v, reward, done = self._velocity(x, self._levels(level), a, commit=True)
        return x - level * v, reward, done

    @torch.inference_mode()
    def step(self, actions: torch.Tensor, decode: bool = True) -> tuple[np.ndarray | None, torch.Tensor, torch.Tensor]:
        """Advance every world by one frame. actions (B[, ...]) ->
        (frames uint8 (B, H, W, 3), rewards (B,), termination probabilities (B,)).

        ``decode=False`` skips the VAE decoder (a quarter to a third of a batched step on a CPU) and returns
        None for the frames: for callers that read the latents (:attr:`last`, normalised (B, 1, C, h, w)).
        The streaming decoder then falls behind, so a simulator either always decodes or never does
        between two prefills (:meth:`step` refuses to mix them)."""
        if not self.ready:
            raise RuntimeError("call prefill(context frames) before step()")
        if decode and self.undecoded.any():
            raise RuntimeError("this simulator stepped without decoding since its worlds started, so its streaming "
                               "decoder is behind; restart them with prefill, or keep decode=False")
        a = torch.as_tensor(actions, device=self.device).reshape(self.batch, 1, *self.action_shape)
        c = self.dit.cfg
        x, reward, done = self._draft(a) if c.commit == "draft" else self._sample_and_commit(a)
        if self.dit.latent_reward is not None:  # read from this frame's latent and the last one
            rewards = self.dit.latent_reward.expected(self.last, x)[:, 0]
        else:
            rewards = c.reward(reward[:, 0])
        self.last = x
        self.t += 1
        probs = torch.sigmoid(done[:, 0].float())
        if not decode:
            self.undecoded[:] = True
            return None, rewards, probs
        frame = self.vae.decode(self.norm.denormalize(x.float()), self.stream)
        return to_uint8(frame[:, -1]), rewards, probs
