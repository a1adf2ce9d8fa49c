"""The serving engine's model math: a preallocated KV cache with one slot per running
sequence, a batched prefill of prompts into slots, and one batched decode step over the
first `n` slots.

The scheduler keeps running sequences in slots 0..n-1 (a finished sequence's slot is filled
by moving the last one into it), so a decode step reads a contiguous prefix of the cache,
never a gathered copy. On CUDA the step runs at a few static shapes (batch rounded up to a
power of two, attended length rounded up to a multiple of 256) and each shape is captured
once in a CUDA graph: a 1B model's step is hundreds of small kernels, and launching them
one by one from Python costs more than the step itself. Padding rows compute garbage into
free slots only, at the last cache position, which a sequence always overwrites before it
can attend to it (a step writes its key/value before attending, and attends only up to its
own position). Optionally the layer pieces are compiled (torch.compile) before capture.

The layer math is written here as functions of weight tensors rather than calls into the
modules so that one compiled function serves every layer; tests check it against
`Transformer.forward`. The model is only read: training is unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fmforge.model.transformer import Transformer, apply_rope, mix_values

LEN_BUCKET = 256


class SlotCache:
    """Keys and values for `slots` sequences of up to `max_len` tokens, every layer."""

    def __init__(self, model: Transformer, slots: int, max_len: int):
        c, p = model.cfg, model.embed.weight
        # one tensor per layer, not one (layers, ...) tensor: a compiled step writes into each
        # as a graph input of its own, where a write into a view of one big input may copy it
        shape = (slots, c.kv_heads, max_len, c.head_dim)
        self.k = [torch.zeros(shape, device=p.device, dtype=p.dtype) for _ in range(c.n_layers)]
        self.v = [torch.zeros_like(k) for k in self.k]
        self.slots, self.max_len = slots, max_len


def _qkv(x, cos, sin, w_norm, w_qkv, w_qn, w_kn, eps: float, nh: int, nkv: int, hd: int, ve=None, w_mix=None):
    """Normed, rotated q and k and v (B, heads, T, hd) of one block: Attention.qkv's math
    (`ve`, `w_mix`: the layer's value embedding of these tokens and its mix, or None)."""
    h = F.rms_norm(x, (x.shape[-1],), w_norm, eps)
    b, t, _ = h.shape
    q, k, v = F.linear(h, w_qkv).split([nh * hd, nkv * hd, nkv * hd], dim=-1)
    if ve is not None:
        v = mix_values(v, ve, w_mix)
    q = q.view(b, t, nh, hd).transpose(1, 2)
    k = k.view(b, t, nkv, hd).transpose(1, 2)
    v = v.view(b, t, nkv, hd).transpose(1, 2)
    if w_qn is not None:
        q, k = F.rms_norm(q, (hd,), w_qn, eps), F.rms_norm(k, (hd,), w_kn, eps)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def _attend_one(q, kc, vc, mask):
    """One query token per sequence against its cached keys: q (B, H, 1, hd), kc/vc
    (B, kv, L, hd), mask (B, L). Query heads grouped by their KV head, no copy of K/V."""
    b, nh, _, hd = q.shape
    nkv = kc.shape[1]
    s = torch.matmul(q.reshape(b, nkv, nh // nkv, hd), kc.transpose(-1, -2)).float() * hd**-0.5
    s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    y = torch.matmul(s.softmax(-1).to(vc.dtype), vc)  # (B, kv, group, hd)
    return y.reshape(b, nh, 1, hd)


def _out_mlp(x, y, w_o, w_mnorm, w_13, w_2, eps: float):
    """Attention output projection, residual, then the SwiGLU MLP and its residual."""
    b, nh, t, hd = y.shape
    x = x + F.linear(y.transpose(1, 2).reshape(b, t, nh * hd), w_o)
    gate, up = F.linear(F.rms_norm(x, (x.shape[-1],), w_mnorm, eps), w_13).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, w_2)


class Engine:
    """Prefill and decode over a SlotCache. `graphs`: capture decode steps in CUDA graphs
    (default: on CUDA); `compile`: torch.compile the whole decode step (True or "step": one
    graph over every layer, so the fusions cross layer boundaries) or only the layer pieces
    ("pieces": faster to compile); `buckets`: run steps at the padded static shapes even
    without graphs (what tests check on a CPU)."""

    def __init__(self, model: Transformer, slots: int, max_len: int | None = None,
                 graphs: bool | None = None, compile: bool | str = False, buckets: bool | None = None):
        c = model.cfg
        max_len = max_len or c.context_length
        if max_len > c.context_length:
            raise ValueError(f"max_len {max_len} exceeds model.context_length {c.context_length}")
        self.model, self.cfg = model, c
        self.cache = SlotCache(model, slots, max_len)
        self.device = model.embed.weight.device
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        if self.graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA model")
        self.buckets = self.graphs if buckets is None else buckets or self.graphs  # padded static shapes
        self.eps, self.nh, self.nkv, self.hd = c.norm_eps, c.n_heads, c.kv_heads, c.head_dim
        self.layers = [(b.attn_norm.weight, b.attn.wqkv.weight,
                        None if b.attn.q_norm is None else b.attn.q_norm.weight,
                        None if b.attn.k_norm is None else b.attn.k_norm.weight,
                        b.attn.wo.weight, b.mlp_norm.weight, b.mlp.w13.weight, b.mlp.w2.weight)
                       for b in model.layers]
        # model.value_embeds and model.unet_skips, per layer: (value-embedding table index or
        # None, its mix, the U-net skip weight it adds its mirror's output with or None, whether
        # its output is kept for its mirror); all None/False for a model without them
        self.extras = [(model.table_of(i), b.attn.ve_mix, b.skip_weight, model.saves_skip(i))
                       for i, b in enumerate(model.layers)]
        if compile not in (False, True, "step", "pieces"):
            raise ValueError(f"compile={compile!r}: expected False, True, 'step' or 'pieces'")
        self.qkv_fn, self.attend_fn, self.out_fn = _qkv, _attend_one, _out_mlp
        self._step = self._step_eager
        if compile:  # shapes turn dynamic on the first recompile, so a few compiles cover every bucket
            for knob in ("recompile_limit", "cache_size_limit"):
                if hasattr(torch._dynamo.config, knob):
                    setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 64))
        if compile == "pieces":  # one compiled function per piece serves all layers
            self.qkv_fn, self.attend_fn, self.out_fn = (torch.compile(f) for f in (_qkv, _attend_one, _out_mlp))
        elif compile:
            self._step = torch.compile(self._step_eager, fullgraph=True)
        self._captured: dict[tuple[int, int], tuple] = {}
        self._pool = None
        self._ar = torch.arange(max_len, device=self.device)

    @property
    def max_len(self) -> int:
        return self.cache.max_len

    # ------------------------------------------------------------------ prefill
    @torch.no_grad()
    def prefill(self, slots: list[int], prompts: list[list[int]], all_logits: list[bool]) -> list[torch.Tensor]:
        """Write each prompt's keys/values into its slot (prompts padded on the right to one
        length; padding lands at positions the sequence overwrites before reading). Returns
        fp32 logits per prompt: every position (T, V) where all_logits, else the last (1, V)."""
        m, t = len(prompts), max(len(p) for p in prompts)
        if t > self.max_len:
            raise ValueError(f"prompt of {t} tokens exceeds the cache length {self.max_len}")
        idx = torch.tensor([p + [0] * (t - len(p)) for p in prompts], device=self.device)
        pos = torch.arange(t, device=self.device)
        sl = torch.tensor(slots, device=self.device)[:, None].expand(m, t)
        cos, sin = self.model.rope_cos[:t], self.model.rope_sin[:t]
        x = self.model.embed(idx)
        ves, skips = self.model.value_embeddings(idx), []
        for li, (wn, wqkv, wqn, wkn, wo, wmn, w13, w2) in enumerate(self.layers):
            table, w_mix, w_skip, saves = self.extras[li]
            if w_skip is not None:
                x = x + w_skip * skips.pop()
            q, k, v = _qkv(x, cos, sin, wn, wqkv, wqn, wkn, self.eps, self.nh, self.nkv, self.hd,
                           None if table is None else ves[table], w_mix)
            self.cache.k[li][sl, :, pos[None].expand(m, t)] = k.transpose(1, 2)
            self.cache.v[li][sl, :, pos[None].expand(m, t)] = v.transpose(1, 2)
            # causal attention over the prompt itself: right padding never reaches a real token
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.nkv != self.nh)
            x = _out_mlp(x, y, wo, wmn, w13, w2, self.eps)
            if saves:
                skips.append(x)
        out = []
        for i, p in enumerate(prompts):
            h = x[i, : len(p)] if all_logits[i] else x[i, len(p) - 1 : len(p)]
            out.append(self.model.logits(self.model.norm(h)))
        return out

    # ------------------------------------------------------------------ decode
    def _step_eager(self, tok: torch.Tensor, pos: torch.Tensor, length: int) -> torch.Tensor:
        """Logits (b, V) for one token per slot 0..b-1; attends to the first `length` positions."""
        b = tok.shape[0]
        cos, sin = self.model.rope_cos[pos][:, None, None], self.model.rope_sin[pos][:, None, None]
        mask = self._ar[None, :length] <= pos[:, None]
        rows = self._ar[:b]
        x = self.model.embed(tok[:, None])
        ves, skips = self.model.value_embeddings(tok[:, None]), []
        for li, (wn, wqkv, wqn, wkn, wo, wmn, w13, w2) in enumerate(self.layers):
            table, w_mix, w_skip, saves = self.extras[li]
            if w_skip is not None:
                x = x + w_skip * skips.pop()
            q, k, v = self.qkv_fn(x, cos, sin, wn, wqkv, wqn, wkn, self.eps, self.nh, self.nkv, self.hd,
                                  None if table is None else ves[table], w_mix)
            kc, vc = self.cache.k[li], self.cache.v[li]
            kc[rows, :, pos] = k[:, :, 0]
            vc[rows, :, pos] = v[:, :, 0]
            y = self.attend_fn(q, kc[:b, :, :length], vc[:b, :, :length], mask)
            x = self.out_fn(x, y, wo, wmn, w13, w2, self.eps)
            if saves:
                skips.append(x)
        return self.model.logits(self.model.norm(x[:, 0]))

    def shape_for(self, n: int, top: int) -> tuple[int, int]:
        """(batch, attended length) a step over n sequences, the furthest at position top-1, runs at."""
        if not self.buckets:
            return n, top
        b = min(1 << (n - 1).bit_length(), self.cache.slots)
        return b, min(-(-top // LEN_BUCKET) * LEN_BUCKET, self.max_len)

    def _inputs(self, tokens: list[int], positions: list[int], b: int) -> torch.Tensor:
        pad = self.max_len - 1  # padding rows: free slots, last position (see module docstring)
        n = len(tokens)
        return torch.tensor([tokens + [0] * (b - n), positions + [pad] * (b - n)], device=self.device)

    def _graph(self, b: int, length: int):
        if (b, length) not in self._captured:
            self._capture(b, length)
        return self._captured[(b, length)]

    @torch.no_grad()
    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        """One token for sequences in slots 0..n-1: token i at position i; logits (n, V)."""
        n = len(tokens)
        b, length = self.shape_for(n, max(positions) + 1)
        inp = self._inputs(tokens, positions, b)
        if not self.graphs:
            return self._step(inp[0], inp[1], length)[:n]
        graph, static, logits = self._graph(b, length)
        static.copy_(inp)
        graph.replay()
        return logits[:n]

    @torch.no_grad()
    def decode_greedy(self, tokens: list[int], positions: list[int], steps: int) -> list[list[int]]:
        """`steps` greedy tokens for each sequence in slots 0..n-1, each step fed the last
        one's argmax on the device: one host round trip for all of them, so the GPU is
        never idle while Python handles the tokens. (n, steps) token ids."""
        n = len(tokens)
        if max(positions) + steps > self.max_len:
            raise ValueError("decode_greedy past the end of the cache")
        b, length = self.shape_for(n, max(positions) + steps)
        inp = self._inputs(tokens, positions, b)
        outs = []
        if self.graphs:
            graph, static, logits = self._graph(b, length)
            static.copy_(inp)
        for j in range(steps):
            if self.graphs:
                graph.replay()
            else:
                logits = self._step(inp[0], inp[1], length)
            nxt = logits.argmax(-1)
            outs.append(nxt[:n])
            if j + 1 < steps:
                if self.graphs:
                    static[0].copy_(nxt)
                    static[1, :n] += 1
                else:
                    inp = torch.stack([nxt, inp[1] + (self._ar[:b] < n)])
        return torch.stack(outs, 1).tolist()

    def _capture(self, b: int, length: int) -> None:
        static = torch.zeros(2, b, dtype=torch.long, device=self.device)
        static[1] = self.max_len - 1  # warm-up and capture write only where padding may
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compile / autotune / allocate outside the capture
            for _ in range(2):
                self._step(static[0], static[1], length)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            logits = self._step(static[0], static[1], length)
        self._pool = graph.pool()
        self._captured[(b, length)] = (graph, static, logits)

    def warmup(self, batches: list[int] | None = None, lengths: list[int] | None = None) -> None:
        """Capture the decode graphs for these shapes now rather than at first use."""
        if not self.graphs:
            return
        for n in batches or [*(1 << i for i in range(self.cache.slots.bit_length())), self.cache.slots]:
            for top in lengths or range(LEN_BUCKET, self.max_len + LEN_BUCKET, LEN_BUCKET):
                key = self.shape_for(n, min(top, self.max_len))
                if key not in self._captured:
                    with torch.no_grad():
                        self._capture(*key)

    def move(self, src: int, dst: int) -> None:
        """Slot src's keys/values into slot dst (keeps running sequences in slots 0..n-1)."""
        for kv in (*self.cache.k, *self.cache.v):
            kv[dst].copy_(kv[src])


def greedy(model: Transformer, prompts: list[list[int]], max_new: int, **engine_kw) -> list[list[int]]:
    """Greedy continuation of several prompts decoded together in one batch of slots."""
    eng = Engine(model, len(prompts), max(len(p) for p in prompts) + max_new, **engine_kw)
    last = [int(lg[-1].argmax()) for lg in eng.prefill(list(range(len(prompts))), prompts, [False] * len(prompts))]
    pos = [len(p) for p in prompts]
    out = [[t] for t in last]
    for _ in range(max_new - 1):
        last = eng.decode(last, pos).argmax(-1).tolist()
        pos = [p + 1 for p in pos]
        for o, t in zip(out, last):
            o.append(t)
    return out
