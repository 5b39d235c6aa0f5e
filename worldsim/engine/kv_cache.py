"""Windowed KV cache: a preallocated ring buffer of W frames' keys and values, for B worlds.

Frame t of a world lives in slot ``t % W``. When frame t is generated it attends
to the slots holding frames t-W+1 .. t-1 (the window, minus itself) and to its own
fresh keys, which are written to a scratch slot after the W slots — so a step
attends over the buffer in place instead of concatenating a copy of it per layer. A cache made with
``variants`` V > 1 has V scratch slots: one call can then run V variants of the same frame (e.g. with and
without the action, for guidance), each attending to the shared past and to itself only. Shapes never change and nothing reads a tensor value on the host, so a
step costs the same at frame 50 and frame 5,000 and can be captured in a graph.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class KVCache(nn.Module):
    def __init__(
        self, depth: int, batch: int, heads: int, head_dim: int, window: int, tokens: int,
        dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", variants: int = 1,
    ) -> None:
        super().__init__()
        if variants < 1:
            raise ValueError(f"a KV cache needs at least one scratch slot, got variants={variants}")
        self.window, self.tokens, self.variants = window, tokens, variants
        shape = (depth, batch, heads, (window + variants) * tokens, head_dim)  # W slots + the scratch slots
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        # Frame index held by each slot of each world; a very negative index means empty.
        self.register_buffer("slot_frame", torch.full((batch, window), -(2**62), dtype=torch.long, device=device),
                             persistent=False)
        self.register_buffer("rows", torch.arange(batch, device=device), persistent=False)  # each world's index, for write

    def reset(self, worlds: torch.Tensor | None = None) -> None:
        """Forget the frames of ``worlds`` (B,) bool, or of all worlds."""
        if worlds is None:
            self.slot_frame.fill_(-(2**62))
        else:
            self.slot_frame.masked_fill_(worlds[:, None], -(2**62))

    def load(self, worlds: torch.Tensor, other: KVCache) -> None:
        """Replace the state of ``worlds`` (N,) long with that of ``other``, a cache of N worlds."""
        self.k[:, worlds] = other.k
        self.v[:, worlds] = other.v
        self.slot_frame[worlds] = other.slot_frame

    def layer(self, i: int, variants: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of layer i for a call of ``variants`` V frames: the W slots, then V scratch slots
        where the call writes its own keys: (B, H, (W+V)*L, hd) each (views of the buffers)."""
        if not 1 <= variants <= self.variants:
            raise ValueError(f"this KV cache has {self.variants} scratch slot(s), a call of {variants} variants needs "
                             f"as many; make it with variants={variants}")
        if variants == self.variants:
            return self.k[i], self.v[i]
        end = (self.window + variants) * self.tokens
        return self.k[i, :, :, :end], self.v[i, :, :, :end]

    def attention_mask(self, t: torch.Tensor, variants: int = 1) -> torch.Tensor:
        """(B, 1, V*L, (W+V)*L) additive mask in the cache's dtype for V variants of frame t (B,): 0 on the past
        slots inside the window and on each variant's own scratch slot, -inf elsewhere (a variant never sees
        another). Additive, made once per step: attention given a bool mask converts it to this form in every
        layer. A row is never all -inf (a variant sees itself)."""
        f, n, per = self.slot_frame, len(t), self.tokens
        valid = (f < t[:, None]) & (f > (t - self.window)[:, None])  # (B, W)
        valid = valid[:, :, None].expand(-1, -1, per).reshape(n, -1)
        if variants == 1:  # one row for every query: a broadcast view, nothing (B, L, ...) is allocated
            keep = torch.cat([valid, torch.ones(n, per, dtype=torch.bool, device=t.device)], dim=1)  # (B, W*L + L)
            mask = torch.zeros(keep.shape, dtype=self.k.dtype, device=t.device).masked_fill_(~keep, float("-inf"))
            return mask[:, None, None, :].expand(-1, 1, per, -1)
        own = torch.eye(variants, dtype=torch.bool, device=t.device).repeat_interleave(per, 0).repeat_interleave(per, 1)
        keep = torch.cat([valid[:, None].expand(-1, variants * per, -1), own.expand(n, -1, -1)], dim=2)
        mask = torch.zeros(keep.shape, dtype=self.k.dtype, device=t.device).masked_fill_(~keep, float("-inf"))
        return mask[:, None]  # (B, 1, V*L, (W+V)*L)

    def write(self, t: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Store frame t's (B,) keys/values, one (k, v) of (B, H, L, hd) per layer, in slot t % W (of a call of
        several variants, the first variant's: (B, H, V*L, hd), its first L tokens)."""
        slot = torch.remainder(t, self.window)  # (B,)
        depth, b, h, _, d = self.k.shape
        # Indexed writes into the (B, H, W+V, L, hd) view: only the frame's rows move (a scatter_ of a bfloat16
        # buffer copied the whole layer).
        keys = self.k.view(depth, b, h, self.window + self.variants, self.tokens, d)
        values = self.v.view(depth, b, h, self.window + self.variants, self.tokens, d)
        for i, (k, v) in enumerate(kv):
            keys[i, self.rows, :, slot] = k[:, :, : self.tokens].to(self.k.dtype)
            values[i, self.rows, :, slot] = v[:, :, : self.tokens].to(self.v.dtype)
        self.slot_frame[self.rows, slot] = t
