"""Windowed KV cache: a preallocated ring buffer of W frames' keys and values, for B worlds.

Frame t of a world lives in slot ``t % W``. When frame t is generated it attends
to the slots holding frames t-W+1 .. t-1 (the window, minus itself) and to its own
fresh keys, which are written to one extra scratch slot after the W slots — so a step
attends over the buffer in place instead of concatenating a copy of it per layer. Shapes never change and nothing reads a tensor value on the host, so a
step costs the same at frame 50 and frame 5,000 and can be captured in a graph.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class KVCache(nn.Module):
    def __init__(
        self, depth: int, batch: int, heads: int, head_dim: int, window: int, tokens: int,
        dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.window, self.tokens = window, tokens
        shape = (depth, batch, heads, (window + 1) * tokens, head_dim)  # W slots + the scratch slot
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

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of layer i, scratch slot last: (B, H, (W+1)*L, hd) each."""
        return self.k[i], self.v[i]

    def attention_mask(self, t: torch.Tensor) -> torch.Tensor:
        """(B, 1, L, (W+1)*L) additive mask in the cache's dtype for frame t (B,): 0 on the past slots inside the
        window and on the frame itself (scratch), -inf elsewhere. Additive, made once per step: attention given a
        bool mask converts it to this form in every layer. A row is never all -inf (the frame sees itself)."""
        f = self.slot_frame
        valid = (f < t[:, None]) & (f > (t - self.window)[:, None])  # (B, W)
        valid = valid[:, :, None].expand(-1, -1, self.tokens).reshape(len(t), -1)
        own = torch.ones(len(t), self.tokens, dtype=torch.bool, device=t.device)
        keep = torch.cat([valid, own], dim=1)  # (B, W*L + L)
        mask = torch.zeros(keep.shape, dtype=self.k.dtype, device=t.device).masked_fill_(~keep, float("-inf"))
        return mask[:, None, None, :].expand(-1, 1, self.tokens, -1)

    def write(self, t: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Store frame t's (B,) keys/values, one (k, v) of (B, H, L, hd) per layer, in slot t % W."""
        slot = torch.remainder(t, self.window)  # (B,)
        depth, b, h, _, d = self.k.shape
        # Indexed writes into the (B, H, W+1, L, hd) view: only the frame's rows move (a scatter_ of a bfloat16
        # buffer copied the whole layer).
        keys = self.k.view(depth, b, h, self.window + 1, self.tokens, d)
        values = self.v.view(depth, b, h, self.window + 1, self.tokens, d)
        for i, (k, v) in enumerate(kv):
            keys[i, self.rows, :, slot] = k.to(self.k.dtype)
            values[i, self.rows, :, slot] = v.to(self.v.dtype)
        self.slot_frame[self.rows, slot] = t
