"""The serving engine's core: a preallocated KV cache with one slot per running sequence,
prefill one prompt into a slot, then one batched decode step for every running slot.

Shapes are static (all slots, the full cache length), so the decode step can be captured
in a CUDA graph or compiled on GPU; sequences join and leave between steps (continuous
batching) by taking and freeing slots. The model is only read: training is unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fmforge.model.transformer import Transformer


class SlotCache:
    """Keys and values for `slots` sequences of up to `max_len` tokens, every layer."""

    def __init__(self, model: Transformer, slots: int, max_len: int):
        c, p = model.cfg, model.embed.weight
        shape = (c.n_layers, slots, c.kv_heads, max_len, c.head_dim)
        self.k = torch.zeros(shape, device=p.device, dtype=p.dtype)
        self.v = torch.zeros_like(self.k)
        self.max_len = max_len


def _layer(block, x, cos, sin, cache: SlotCache, li: int, slots: torch.Tensor, pos: torch.Tensor, mask):
    """One block on x (B, T, d) for sequences in `slots` at positions `pos` (B, T)."""
    a = block.attn
    h = block.attn_norm(x)
    b, t, _ = h.shape
    q, k, v = a.qkv(h, cos, sin)
    # scatter this step's keys/values into each sequence's slot at its positions
    sl = slots[:, None].expand(b, t)
    cache.k[li][sl, :, pos] = k.transpose(1, 2)
    cache.v[li][sl, :, pos] = v.transpose(1, 2)
    kk, vv = cache.k[li][slots], cache.v[li][slots]
    y = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask[:, None], enable_gqa=a.n_kv != a.n_heads)
    x = x + a.wo(y.transpose(1, 2).reshape(b, t, -1))
    return x + block.mlp(block.mlp_norm(x))


@torch.no_grad()
def forward_slots(model: Transformer, cache: SlotCache, idx: torch.Tensor, slots: torch.Tensor,
                  pos: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) for tokens `idx` (B, T) at positions `pos` (B, T) of sequences `slots`."""
    cos, sin = model.rope_cos[pos][:, None], model.rope_sin[pos][:, None]  # (B, 1, T, hd/2)
    ar = torch.arange(cache.max_len, device=idx.device)
    mask = ar[None, None, :] <= pos[:, :, None]  # (B, T, L): causal within the slot
    x = model.embed(idx)
    for li, block in enumerate(model.layers):
        x = _layer(block, x, cos, sin, cache, li, slots, pos, mask)
    return F.linear(model.norm(x), model.output_weight())


def prefill(model, cache, slot: int, ids: list[int]) -> torch.Tensor:
    """Fills `slot` with the prompt; logits for every prompt position (T, V)."""
    dev = model.embed.weight.device
    idx = torch.tensor([ids], device=dev)
    pos = torch.arange(len(ids), device=dev)[None]
    return forward_slots(model, cache, idx, torch.tensor([slot], device=dev), pos)[0]


def decode_step(model, cache, last: torch.Tensor, slots: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """One token for every running sequence: last (B,) at positions pos (B,); logits (B, V)."""
    return forward_slots(model, cache, last[:, None], slots, pos[:, None])[:, 0]


def greedy(model, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    """Greedy continuation of several prompts decoded together in one batch of slots."""
    cache = SlotCache(model, len(prompts), max(len(p) for p in prompts) + max_new)
    dev = model.embed.weight.device
    last = torch.stack([prefill(model, cache, i, p)[-1].argmax() for i, p in enumerate(prompts)])
    pos = torch.tensor([len(p) for p in prompts], device=dev)
    slots = torch.arange(len(prompts), device=dev)
    out = [last]
    for _ in range(max_new - 1):
        last = decode_step(model, cache, last, slots, pos).argmax(-1)
        pos = pos + 1
        out.append(last)
    return torch.stack(out, 1).tolist()
