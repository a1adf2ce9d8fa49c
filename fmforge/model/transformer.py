"""A decoder-only transformer, Llama-style: RMSNorm, RoPE, SwiGLU, grouped-query attention.

Readable in one sitting, and it knows nothing of parallelism, optimizers or devices:
fmforge.train.parallelize wraps it for FSDP/compile, the trainer drives it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fmforge.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap·tanh(logits/cap): smooth, monotone, about the identity well inside ±cap; None: as is."""
    return logits if cap is None else cap * torch.tanh(logits / cap)


def rope_tables(head_dim: int, length: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of the rotary angles, shaped (length, head_dim/2), in fp32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of each head's last dimension; cos/sin
    broadcast against x's leading dimensions ((T, hd/2) for x (B, H, T, hd), (T, 1, hd/2)
    for x (B, T, H, hd))."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)


def mix_values(v: torch.Tensor, ve: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """a·v + b·ve, (a, b) = mix: a layer's values with its value embedding (model.value_embeds),
    both (B, T, kv·hd). In v's dtype: under autocast v is bf16 where the table and mix are fp32,
    and attention wants q, k and v alike."""
    return (mix[0] * v + mix[1] * ve).to(v.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, value_embed: bool = False):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        # q, k and v projections in one matmul: one wide GEMM runs closer to peak than three
        self.wqkv = nn.Linear(cfg.d_model, (self.n_heads + 2 * self.n_kv) * self.hd, bias=False)
        self.wo = nn.Linear(self.n_heads * self.hd, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(self.hd, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.hd, cfg.norm_eps) if cfg.qk_norm else None
        # (a, b) of mix_values, only in a layer given a value-embedding table. A vector of two,
        # not two 0-dim scalars: fused/foreach optimizers and FSDP's dim-0 sharding take 1-D.
        self.ve_mix = nn.Parameter(torch.empty(2)) if value_embed else None

    def qkv(self, x, cos, sin, ve=None):
        """Queries, keys and values (B, heads, T, hd), normed and rotated: what attention
        and a KV cache (fmforge.serve.engine) both start from. `ve`: this layer's value
        embedding of the same tokens (B, T, kv·hd), mixed into the values."""
        b, t, _ = x.shape
        q, k, v = self.wqkv(x).split([self.n_heads * self.hd, self.n_kv * self.hd, self.n_kv * self.hd], dim=-1)
        if ve is not None:
            v = mix_values(v, ve, self.ve_mix)
        q = q.view(b, t, self.n_heads, self.hd)
        k = k.view(b, t, self.n_kv, self.hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        # Rotate in the projection's own (B, T, heads, hd) layout and hand attention transposed
        # views: the rotation and its backward then read and write memory in order, where in
        # (B, heads, T, hd) the backward's write into the fused q|k|v gradient was a transpose
        # (3.3 ms of a 71 ms gpt2-124m step, train_profile-2026-12-07.json).
        cos, sin = cos[:, None], sin[:, None]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.view(b, t, self.n_kv, self.hd).transpose(1, 2)

    def forward(self, x, cos, sin, cache=None, ve=None):
        b, t, _ = x.shape
        q, k, v = self.qkv(x, cos, sin, ve)
        gqa = self.n_kv != self.n_heads
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:  # incremental decoding: attend to everything cached so far plus these t tokens
            k, v = cache.update(k, v)
            mask = None
            if t > 1:
                mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w13 = nn.Linear(cfg.d_model, 2 * cfg.hidden_dim, bias=False)  # gate and up, one matmul
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.d_model, bias=False)  # down

    def forward(self, x):
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, value_embed: bool = False, takes_skip: bool = False):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, value_embed)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)
        # model.unet_skips: the weight of the mirror block's output this block adds to its input.
        # Here, not in the Transformer, so the add runs inside the block's compiled graph.
        self.skip_weight = nn.Parameter(torch.empty(1)) if takes_skip else None

    def forward(self, x, cos, sin, cache=None, ve=None, skip=None):
        if skip is not None:
            x = x + self.skip_weight * skip
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, ve)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.vocab_size:
            raise ValueError("model.vocab_size must be set before building the model")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, self.table_of(i) is not None, self.takes_skip(i))
                                    for i in range(cfg.n_layers))
        # model.value_embeds: "embed" in the name puts them with the embedding in the optimizer
        # (AdamW, no weight decay; fmforge.train.optim, muon). None when off: no state_dict key.
        self.value_embeds = nn.ModuleList(nn.Embedding(cfg.vocab_size, cfg.kv_heads * cfg.head_dim)
                                          for _ in range(cfg.value_embeds)) if cfg.value_embeds else None
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.head_dim, cfg.context_length, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith("ve_mix"):
                # a = b = 0.5, as modded-nanogpt: both terms get a gradient from the first step
                # (b = 0 would leave the tables' gradient at zero until b moved), and with the
                # table at v's RMS (below) the mix starts at ~0.7x that RMS (two independent
                # halves), where a = b = 1 would start at 1.4x.
                p.fill_(0.5)
            elif p.dim() == 1:
                p.fill_(1.0)  # norm gains; U-net skip weights (each skip starts fully on)
            elif name.startswith("value_embeds."):
                # The RMS v has at init: v is an init_std-normal matrix times a unit-RMS normed
                # vector. At the embedding's init_std the tables would start sqrt(d_model) times
                # smaller than v (23x at d 512) and take hundreds of AdamW steps to matter.
                nn.init.normal_(p, std=std * math.sqrt(self.cfg.d_model))
            elif self.cfg.zero_init_out and name.endswith(("wo.weight", "w2.weight", "lm_head.weight")):
                p.zero_()
            elif name.endswith(("wo.weight", "w2.weight")):
                # residual projections scaled down by depth (GPT-2 / nanoGPT)
                nn.init.normal_(p, std=std / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, std=std)
        cos, sin = rope_tables(self.cfg.head_dim, self.cfg.context_length, self.cfg.rope_base, self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def table_of(self, i: int) -> int | None:
        """The value-embedding table layer i mixes in: table j serves layers j and n-k+j."""
        k, n = self.cfg.value_embeds, self.cfg.n_layers
        return i if i < k else i - (n - k) if i >= n - k else None

    def takes_skip(self, i: int) -> bool:
        """model.unet_skips: layer i is one of the last n//2, so it adds its mirror's output."""
        return self.cfg.unet_skips and i >= self.cfg.n_layers - self.cfg.n_layers // 2

    def saves_skip(self, i: int) -> bool:
        """model.unet_skips: layer i is one of the first n//2, so its output is kept for its mirror."""
        return self.cfg.unet_skips and i < self.cfg.n_layers // 2

    def value_embeddings(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Each value-embedding table's rows for these token ids ([] when off)."""
        return [] if self.value_embeds is None else [e(idx) for e in self.value_embeds]

    def output_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Output logits (fp32) of final hidden states h (already normed): the one place, besides
        the fused loss head, that maps hidden states to logits, so every user (eval, serve,
        generate) applies model.logit_softcap as training did."""
        return softcap(F.linear(h, self.output_weight()).float(), self.cfg.logit_softcap)

    def hidden(self, idx: torch.Tensor, caches=None, start: int = 0) -> torch.Tensor:
        t = idx.shape[1]
        if start + t > self.cfg.context_length:
            raise ValueError(f"sequence of {start + t} tokens exceeds model.context_length {self.cfg.context_length}")
        cos, sin = self.rope_cos[start : start + t], self.rope_sin[start : start + t]
        x = self.embed(idx)
        ves = self.value_embeddings(idx)  # of the tokens at these positions, also when decoding
        skips = []  # U-net: a stack, so block n-1-i gets block i's output
        for i, layer in enumerate(self.layers):
            j = self.table_of(i)
            x = layer(x, cos, sin, None if caches is None else caches[i], None if j is None else ves[j],
                      skips.pop() if self.takes_skip(i) else None)
            if self.saves_skip(i):
                skips.append(x)
        return self.norm(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"):
        """Logits for every position, or the cross-entropy loss when targets are given
        (targets of -100 are ignored)."""
        h = self.hidden(idx)
        if targets is None:
            return self.logits(h)
        return self.loss_head(h, self.output_weight(), targets, reduction, self.cfg.logit_softcap)

    @staticmethod
    def loss_head(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str,
                  cap: float | None = None) -> torch.Tensor:
        """Output projection (+ soft-cap) + cross-entropy in fp32. A function of its own so that
        it can be compiled apart (fmforge.train.parallelize): fused, the fp32 logits are never
        written out in full."""
        logits = softcap(F.linear(h, weight).float(), cap)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                               reduction=reduction)


class KVCache:
    """Per-layer key/value cache for incremental decoding, preallocated to a max length."""

    def __init__(self, batch: int, n_kv: int, max_len: int, head_dim: int, device, dtype):
        self.k = torch.zeros(batch, n_kv, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor):
        t = k.shape[2]
        self.k[:, :, self.length : self.length + t] = k
        self.v[:, :, self.length : self.length + t] = v
        self.length += t
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


def new_caches(model: Transformer, batch: int, max_len: int) -> list[KVCache]:
    p = model.embed.weight
    c = model.cfg
    return [KVCache(batch, c.kv_heads, max_len, c.head_dim, p.device, p.dtype) for _ in range(c.n_layers)]
