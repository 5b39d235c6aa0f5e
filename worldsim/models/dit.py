"""Diffusion-forcing DiT over VAE latent frames, with actions as in-context tokens.

A clip of T latent frames ``(B, T, C, h, w)`` becomes one token sequence: frame t
contributes K action tokens (the action that led to it) followed by
``(h / p) * (w / p)`` patch tokens; L = K + patches tokens per frame. Each frame
has its own noise level, embedded and applied to all of its tokens through adaLN
(shift, scale, zero-initialised gate). Attention is block-causal over frames
(full within a frame, past frames across) and limited to a window of W frames.
Positions are 3D rotary (t, y, x); action token k of frame t sits at (t, -1, k).

Two ways in:

* :meth:`DiT.forward` — a whole clip (training, and the uncached reference);
* :meth:`DiT.step` — one frame against a :class:`~worldsim.engine.kv_cache.KVCache`
  holding the keys/values of the previous frames (inference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from worldsim.config import from_dict
from worldsim.models.latent_reward import LatentReward
from worldsim.models.rope import Rotary3D, apply_rotary


@dataclass
class DiTConfig:
    """Size and shape of the dynamics network."""

    latent_channels: int = 8
    """C of the VAE latents."""
    latent_size: int = 16
    """h = w of the VAE latents."""
    patch_size: int = 2
    """Spatial patch p (the temporal patch is 1: generation is frame by frame)."""
    dim: int = 192
    """Token width."""
    depth: int = 6
    """Transformer blocks."""
    heads: int = 4
    """Attention heads (head_dim = dim / heads, a multiple of 8)."""
    mlp_ratio: float = 4.0
    """MLP hidden width / dim."""
    window: int = 16
    """W: frames a frame can attend to, itself included."""
    action_tokens: int = 1
    """K: tokens per action."""
    action_cond: bool = True
    """Also add the action to its frame's adaLN conditioning (next to the noise level), so every token
    of the frame is modulated by it directly, not only through attention to the action tokens."""
    reward_space: str = "symlog"
    """What the reward head predicts: ``symlog`` (the symlog of the reward, fit by MSE: squashed, so a spiky
    reward such as CarRacing's +3.2 per tile comes out at under half its mean) or ``raw`` (the reward itself:
    its conditional mean, so predicted returns add up to real ones on the data's own driving). Measured on
    CarRacing (checkpoints/README.md, 2026-12-02): an agent trained in the raw-head world was paid 494 by the
    world and -36 by the real game; in the symlog-head world, 227 and 327. The raw head is more optimistic
    where the data never went, and PPO finds those places, so symlog stays the default. ``sign``: three classes
    (the reward's sign: -1, 0, +1) fit by cross-entropy, the reward being the most likely one, as DIAMOND does for
    Atari's clipped rewards: a frame the head is unsure of pays 0, so small biases of a regression head do not add
    up over a long episode (Boxing: a mean of +0.045 a frame pays +80 over a 1,780-step bout)."""
    head_pool: str = "mean"
    """How the reward and termination heads read a frame's tokens: ``mean`` (their average) or ``attention``
    (learned queries, one per attention head, over the frame's tokens; zero-initialised, so it starts as the
    mean and a file without it loads unchanged). An event in a few pixels (a score digit that changes) is one
    token of 65 and is diluted by the mean."""
    commit: str = "pass"
    """How a generated frame enters the KV cache. ``pass``: a second network call a frame, over the finished
    latent noised to the sampler's context level (what the cache keeps; rewards and termination are read from
    it). ``draft``: one call a frame. Every frame's input is its previous frame noised to ``draft_level`` (the
    sampler's start, as a draft of it), and that input is what the cache keeps: the call that denoises a frame
    in one step also writes it, and reads its reward and termination. A network is trained for one mode
    (``dynamics.train`` follows this setting), so a file of one mode always runs in that mode."""
    draft_level: float = 0.5
    """``commit=draft``: the noise level of every frame's input (its previous frame noised this much)."""
    latent_reward: tuple[float, ...] = ()
    """The reward values a :class:`~worldsim.models.latent_reward.LatentReward` beside the network reads from each
    frame's clean latent and the one before it (the engine pays its expected value instead of the reward head's);
    empty: none, the reward head pays. Fit by ``python -m envs.loop.latent_reward`` on a trained world."""

    @property
    def patches(self) -> int:
        return (self.latent_size // self.patch_size) ** 2

    @property
    def tokens_per_frame(self) -> int:
        return self.action_tokens + self.patches

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @classmethod
    def from_stored(cls, d: dict[str, Any]) -> DiTConfig:
        """The config stored in a file. Files written before ``action_cond`` existed have no such path; those
        written before ``reward_space`` predict symlog rewards (as the default does)."""
        return from_dict(cls, {"action_cond": False, "reward_space": "symlog", **d}, "dit config")

    def reward(self, head: torch.Tensor) -> torch.Tensor:
        """The reward head's output -> the reward (float32)."""
        head = head.float()
        if self.reward_space == "sign":  # (..., 3) logits of -1, 0, +1 -> the most likely one
            return head.argmax(-1).float() - 1
        return torch.sign(head) * torch.expm1(head.abs()) if self.reward_space == "symlog" else head

    def validate(self) -> None:
        if self.head_pool not in ("mean", "attention"):
            raise ValueError(f"head_pool must be mean or attention, got {self.head_pool!r}")
        if self.reward_space not in ("symlog", "raw", "sign"):
            raise ValueError(f"reward_space must be symlog, raw or sign, got {self.reward_space!r}")
        if self.latent_size % self.patch_size:
            raise ValueError(f"latent_size {self.latent_size} is not divisible by patch_size {self.patch_size}")
        if self.dim % self.heads or self.head_dim % 8:
            raise ValueError(f"dim / heads must be a whole multiple of 8, got {self.dim} / {self.heads}")
        if self.window < 1 or self.action_tokens < 1:
            raise ValueError("window and action_tokens must be at least 1")
        if self.commit not in ("pass", "draft"):
            raise ValueError(f"commit must be pass or draft, got {self.commit!r}")
        if not 0 < self.draft_level <= 1:
            raise ValueError(f"draft_level must be in (0, 1], got {self.draft_level}")
        if self.latent_reward and (len(self.latent_reward) < 2 or self.latent_size % 4
                                   or list(self.latent_reward) != sorted(set(self.latent_reward))):
            raise ValueError(f"latent_reward must be two or more increasing reward values on a latent_size divisible "
                             f"by 4, got {list(self.latent_reward)} on {self.latent_size}")


def level_embedding(levels: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of noise levels in [0, 1]: (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=levels.device, dtype=torch.float32) / half)
    ang = levels.float()[..., None] * 1000.0 * freqs
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


class AttentionPool(nn.Module):
    """A frame's tokens (..., L, D) -> one vector (..., D): per attention head, a learned query scores the
    (normalised) tokens and the softmax weights average that head's slice of them. The query starts at zero,
    i.e. as the plain mean."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(heads, dim // heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.heads
        keys = rearrange(F.layer_norm(x, x.shape[-1:]), "... l (h d) -> ... h l d", h=h)
        vals = rearrange(x, "... l (h d) -> ... h l d", h=h)
        w = torch.softmax((keys * self.query.to(x.dtype)[:, None]).sum(-1) / math.sqrt(keys.shape[-1]), dim=-1)
        return rearrange((w[..., None] * vals).sum(-2), "... h d -> ... (h d)")


class ActionEmbed(nn.Module):
    """Actions -> K tokens each, with a learned null action (index n for discrete spaces)."""

    def __init__(self, space: dict[str, Any], dim: int, k: int) -> None:
        super().__init__()
        self.kind, self.k, self.dim = space["type"], k, dim
        if self.kind == "Discrete":
            self.start, self.n = int(space.get("start", 0)), int(space["n"])
            self.table = nn.Embedding(self.n + 1, k * dim)
        elif self.kind == "MultiDiscrete":
            self.nvec = [int(n) for n in space["nvec"]]
            self.tables = nn.ModuleList(nn.Embedding(n + 1, k * dim) for n in self.nvec)
        elif self.kind == "Box":
            d = int(math.prod(space["shape"]))
            self.mlp = nn.Sequential(nn.Linear(d, dim), nn.SiLU(), nn.Linear(dim, k * dim))
            self.null = nn.Parameter(torch.randn(k * dim) * 0.02)
        else:
            raise ValueError(f"unsupported action space {space}")

    def forward(self, actions: torch.Tensor, null: torch.Tensor | None = None) -> torch.Tensor:
        """actions (B, T[, ...]); null (B, T) bool, True = use the null action -> (B, T, K, D)."""
        b, t = actions.shape[:2]
        if null is None:
            null = torch.zeros(b, t, dtype=torch.bool, device=actions.device)
        if self.kind == "Discrete":
            idx = torch.where(null, self.n, actions.long() - self.start)
            e = self.table(idx)
        elif self.kind == "MultiDiscrete":
            e = sum(tab(torch.where(null, n, actions[..., i].long())) for i, (tab, n) in enumerate(zip(self.tables, self.nvec, strict=True)))
        else:
            e = self.mlp(actions.float().reshape(b, t, -1))
            e = torch.where(null[..., None], self.null.to(e.dtype), e)
        return rearrange(e, "b t (k d) -> b t k d", k=self.k)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads)
        self.k_norm = nn.RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, cos, sin, mask, cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (B, S, D); cos/sin for these S tokens; mask (B|1, 1, S, P + S): bool (True = attend) or
        additive (0 = attend, -inf = not) in the dtype attention runs in.
        cache: key/value buffers (B, H, P + S, hd) whose last S positions are scratch: these tokens' keys and
        values are written there and attention runs over the buffers in place.
        Returns (out (B, S, D), (k, v) of these tokens)."""
        q, k, v = rearrange(self.qkv(x), "b s (three h d) -> three b h s d", three=3, h=self.heads)
        q = apply_rotary(self.q_norm(q), cos, sin)
        k = apply_rotary(self.k_norm(k), cos, sin)
        kk, vv = k, v
        if cache is not None:
            kk, vv = cache
            s = k.shape[2]
            kk[:, :, -s:] = k
            vv[:, :, -s:] = v
        # A cache may be kept in another dtype than the weights (float32 under bf16 weights on a CPU): attention
        # then runs in the cache's dtype.
        out = F.scaled_dot_product_attention(q.to(kk.dtype), kk, vv, attn_mask=mask).to(x.dtype)
        return self.proj(rearrange(out, "b h s d -> b s (h d)")), (k, v)


class Block(nn.Module):
    """adaLN-Zero transformer block; the modulation is per token (from its frame's noise level)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, cond, cos, sin, mask, cache=None):
        """x (B, T*L, D); cond (B, T, D) per-frame conditioning -> (x, (k, v)).

        The modulation is computed once per frame and broadcast over the frame's L tokens
        (the same result as per token, at 1/L of the cost of the adaLN projection)."""
        t = cond.shape[1]
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(cond))[:, :, None].chunk(6, dim=-1)  # (B, T, 1, D) each
        frames = partial(rearrange, pattern="b (t l) d -> b t l d", t=t)
        tokens = partial(rearrange, pattern="b t l d -> b (t l) d")
        h, kv = self.attn(tokens(frames(self.norm1(x)) * (1 + sc1) + sh1), cos, sin, mask, cache)
        x = x + tokens(g1 * frames(h))
        x = x + tokens(g2 * frames(self.mlp(tokens(frames(self.norm2(x)) * (1 + sc2) + sh2))))
        return x, kv


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig, action_space: dict[str, Any]) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.action_space = cfg, action_space
        d, p = cfg.dim, cfg.patch_size
        self.patch_in = nn.Linear(cfg.latent_channels * p * p, d)
        self.action_embed = ActionEmbed(action_space, d, cfg.action_tokens)
        self.action_pos = nn.Parameter(torch.randn(cfg.action_tokens, d) * 0.02)
        self.level_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        # Zero-initialised: a model fine-tuned from one without it starts out unchanged.
        self.action_cond = nn.Linear(d, d) if cfg.action_cond else None
        if self.action_cond is not None:
            nn.init.zeros_(self.action_cond.weight)
            nn.init.zeros_(self.action_cond.bias)
        self.rope = Rotary3D(cfg.head_dim)
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(d, 2 * d)
        self.patch_out = nn.Linear(d, cfg.latent_channels * p * p)
        for layer in (self.ada_out, self.patch_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        classes = 3 if cfg.reward_space == "sign" else 1  # sign: logits of -1, 0, +1
        self.reward_head = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, classes))
        self.done_head = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 1))
        pool = cfg.head_pool == "attention"
        self.reward_pool = AttentionPool(d, cfg.heads) if pool else None
        self.done_pool = AttentionPool(d, cfg.heads) if pool else None
        self.latent_reward = (LatentReward(cfg.latent_channels, cfg.latent_size, cfg.latent_reward)
                              if cfg.latent_reward else None)
        # Positions of one frame's tokens relative to its frame index: (L, 3).
        k, g = cfg.action_tokens, cfg.latent_size // p
        act = torch.stack([torch.zeros(k), -torch.ones(k), torch.arange(k)], -1)
        ys, xs = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
        lat = torch.stack([torch.zeros(g * g), ys.flatten(), xs.flatten()], -1)
        self.register_buffer("frame_pos", torch.cat([act, lat]).float(), persistent=False)

    # -- pieces shared by forward and step ------------------------------------------------
    def _tokens(self, latents, levels, actions, null):
        """-> tokens (B, T*L, D), per-frame conditioning (B, T, D)."""
        c = self.cfg
        patches = rearrange(latents, "b t c (h p) (w q) -> b t (h w) (c p q)", p=c.patch_size, q=c.patch_size)
        act = self.action_embed(actions, null)  # (B, T, K, D)
        x = torch.cat([act + self.action_pos, self.patch_in(patches)], dim=2)
        cond = self.level_mlp(level_embedding(levels, c.dim).to(x.dtype))  # (B, T, D)
        if self.action_cond is not None:
            cond = cond + self.action_cond(act.mean(2))
        return rearrange(x, "b t l d -> b (t l) d"), cond

    def _outputs(self, x, cond, b, t):
        """Final hidden (B, T*L, D) -> velocity (B, T, C, h, w), reward head (B, T; ``reward_space=sign``: its
        three logits, B, T, 3), termination logit (B, T)."""
        c = self.cfg
        shift, scale = self.ada_out(F.silu(cond))[:, :, None].chunk(2, dim=-1)  # (B, T, 1, D) each
        x = rearrange(x, "b (t l) d -> b t l d", t=t)
        y = self.patch_out(self.norm_out(x[:, :, c.action_tokens :]) * (1 + scale) + shift)  # patch tokens only
        g = c.latent_size // c.patch_size
        v = rearrange(y, "b t (h w) (c p q) -> b t c (h p) (w q)", h=g, w=g, p=c.patch_size, q=c.patch_size)
        if self.reward_pool is None:
            pooled_r = pooled_d = x.mean(2)
        else:
            pooled_r, pooled_d = self.reward_pool(x), self.done_pool(x)
        reward = self.reward_head(pooled_r)
        return v, reward if c.reward_space == "sign" else reward[..., 0], self.done_head(pooled_d)[..., 0]

    def head_modules(self) -> list[nn.Module]:
        """The modules of the reward and termination heads (what ``train_only=heads`` trains)."""
        return [m for m in (self.reward_pool, self.reward_head, self.done_pool, self.done_head) if m is not None]

    def frame_mask(self, frames: torch.Tensor, branch: torch.Tensor | None = None) -> torch.Tensor:
        """Frame index of each frame (T,) -> block-causal windowed mask (T*L, T*L), True = attend.
        ``branch`` (T,) bool marks branch frames: one attends to itself and to the other frames of
        earlier index inside the window; nothing else attends to it."""
        diff = frames[:, None] - frames[None, :]
        mask = (diff >= 0) & (diff < self.cfg.window)
        if branch is not None:
            own = torch.eye(len(frames), dtype=torch.bool, device=frames.device)
            mask = torch.where(branch[None, :], own, mask)  # branch keys: only to themselves
            mask = torch.where(branch[:, None] & ~own, mask & (diff > 0), mask)
        per = self.cfg.tokens_per_frame
        return mask.repeat_interleave(per, 0).repeat_interleave(per, 1)

    # -- whole clips --------------------------------------------------------------------
    def forward(
        self,
        latents: torch.Tensor,
        levels: torch.Tensor,
        actions: torch.Tensor,
        null: torch.Tensor | None = None,
        start: int = 0,
        frames: torch.Tensor | None = None,
        branch: torch.Tensor | None = None,
    ):
        """latents (B, T, C, h, w) at per-frame levels (B, T); actions (B, T[, ...]) that led to each frame;
        null (B, T) bool swaps in the null action. Frame indices are start .. start + T - 1, or ``frames`` (T,).
        ``branch`` (T,) bool: branch frames see the other frames of earlier index and themselves, and no
        other frame sees them — each is predicted as the engine's step would predict it after those frames,
        so many next-frame variants (levels, actions) share one pass over a clip.
        -> velocity (B, T, C, h, w), reward (B, T), termination logit (B, T)."""
        b, t = latents.shape[:2]
        x, cond = self._tokens(latents, levels, actions, null)
        if frames is None:
            frames = torch.arange(start, start + t, device=x.device)
        pos = self.frame_pos[None] + F.pad(frames.float()[:, None, None], (0, 2))  # (T, L, 3)
        cos, sin = self.rope.angles(pos.reshape(-1, 3))
        mask = self.frame_mask(frames, branch)
        for block in self.blocks:
            x, _ = block(x, cond, cos, sin, mask)
        return self._outputs(x, cond, b, t)

    # -- one frame against the KV cache -------------------------------------------------
    def step(self, latent, level, action, t, cache, commit: bool = False, null=None):
        """latent (B, V, C, h, w): V variants of frame index t (B,), at levels (B, V), after actions (B, V[, ...]),
        null (B, V) bool; V = 1 in plain sampling, 2 for action guidance (the frame with its action and with the
        null action in one call: cheaper than two calls where per-call overhead dominates, as on a CPU).

        Each variant attends to the cached frames t-W+1 .. t-1 of its world and to itself, never to another
        variant (the cache needs V scratch slots: ``KVCache(variants=V)``), so a call of V variants gives what V
        calls would. With ``commit`` the first variant's keys/values are written to the cache (a finished frame,
        at the context level). -> velocity (B, V, C, h, w), reward (B, V), termination logit (B, V).
        """
        b, variants = latent.shape[:2]
        x, cond = self._tokens(latent, level, action, null)
        pos = self.frame_pos[None] + F.pad(t.float()[:, None, None], (0, 2))  # (B, L, 3): every variant at frame t
        cos, sin = self.rope.angles(pos)
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, L, hd/2)
        if variants > 1:
            cos, sin = cos.repeat(1, 1, variants, 1), sin.repeat(1, 1, variants, 1)
        mask = cache.attention_mask(t, variants)
        new_kv = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cond, cos, sin, mask, cache.layer(i, variants))
            new_kv.append(kv)
        if commit:
            cache.write(t, new_kv)
        return self._outputs(x, cond, b, variants)
