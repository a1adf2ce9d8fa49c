"""Fine-tuning memory on one device, the way `fmforge finetune` runs it.

`fmforge finetune` trains a transformers Llama-family model (eager modules, SDPA attention)
under bf16 autocast: full fine-tuning with fp32 weights and AdamW, LoRA with the frozen base
in bf16 and fp32 adapters (fmforge.finetune.run.place/prepare_model). Its activations are not
fmforge's compiled block's (fmforge.cost.memory): HF's RMSNorm works in fp32, autocast casts a
layer's input once per projection, and autocast's bf16 copies of fp32 weights are kept for
the backward. Counted tensor by tensor, bytes per token and layer (d width, q = heads·head_dim,
kv = kv_heads·head_dim, f = MLP width, H heads, r LoRA rank):

  full:  2 RMSNorms (fp32 input 4d, fp32 normed 4d, rsqrt 4)       16d + 8
         q, k, v and gate, up: a bf16 cast of their input each       6d + 4d
         SDPA: q, k, v, output (bf16), log-sum-exp (fp32 per head)   4q + 4kv + 4H
         MLP: gate, up, silu(gate), silu·up (bf16)                   8f
  LoRA:  2 RMSNorms (fp32 input, rsqrt; the frozen weight needs no normed copy)  8d + 8
         SDPA as above; MLP: gate, up, silu(gate) (down is frozen)   4q + 4kv + 4H + 6f
         each adapter: a bf16 cast of its fp32 input (PEFT casts to the adapter's dtype),
         on CUDA the dropout's bool mask, lora_A's output           (2 + m)·in + 2r
         over q, k, v, o, gate, up, down: in = 5d + q + f.

Outside the layers: rotary cos/sin (fp32, 8·head_dim a position), the final RMSNorm (full: 10d + 4
with lm_head's input cast; LoRA: 4d + 4), the token ids for the embedding (full) and the loss
(8 each), and the loss: fmforge's loop takes cross-entropy of `logits.float()`, whose fp32
log-softmax (4 bytes a vocabulary entry) is kept; at the start of the backward its gradient and
the logits' gradient (4 + 4 more) are alive with every activation, which is the step's peak
(gradients are None between steps, set_to_none, and fill in as activations are freed). In
LoRA the first layer's input norm saves nothing (the embedding is frozen).

tests/test_cost_finetune.py checks the saved bytes against a census of what autograd keeps
(saved-tensor hooks on a CPU model) and the peak against the H200 measurement in
benchmarks/results/finetune_throughput-*.json. Activation checkpointing (HF's, non-reentrant)
keeps each layer's input and recomputes one layer at a time: counted, not measured.
"""
from __future__ import annotations

import math

from fmforge.config import ModelConfig
from fmforge.cost.memory import GB, HEADROOM
from fmforge.model.flops import count_params

LORA_PROJECTIONS = 7  # q, k, v, o, gate, up, down: `fmforge finetune`'s default targets
LOSS_SAVED, LOSS_PEAK = 4, 12  # bytes per vocabulary entry: kept log-softmax; + its and the logits' gradients


def lora_params(cfg: ModelConfig, rank: int) -> int:
    """Adapters (rank × (in + out)) on every attention and MLP projection of every layer."""
    d, q, kv, f = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.hidden_dim
    return rank * ((d + q) + 2 * (d + kv) + (q + d) + 2 * (d + f) + (f + d)) * cfg.n_layers


def layer_bytes(cfg: ModelConfig, method: str, rank: int = 8, dropout: float = 0.05, mask_bytes: int = 1) -> int:
    """Bytes autograd keeps per token for one decoder layer (mask_bytes: a dropout mask element,
    1 on CUDA (bool); CPU dropout keeps a mask of the input's dtype instead)."""
    d, q, kv, f, h = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.hidden_dim, cfg.n_heads
    attention = 4 * q + 4 * kv + 4 * h
    if method == "full":
        return 16 * d + 8 + 10 * d + attention + 8 * f
    m = mask_bytes if dropout > 0 else 0
    adapters = (2 + m) * (5 * d + q + f) + LORA_PROJECTIONS * 2 * rank
    return 8 * d + 8 + attention + 6 * f + adapters


def saved_bytes(cfg: ModelConfig, method: str, micro_batch: int, seq_len: int, rank: int = 8, dropout: float = 0.05,
                mask_bytes: int = 1) -> int:
    """What autograd holds at the end of the forward, activations only (no weights or their copies)."""
    d, tokens = cfg.d_model, micro_batch * seq_len
    per_token = cfg.n_layers * layer_bytes(cfg, method, rank, dropout, mask_bytes) + 8  # + the loss's targets
    if method == "full":
        per_token += 10 * d + 4 + 8  # final norm + lm_head's input cast; the embedding's token ids
    # LoRA: the final norm's 4d + 4 is what the first layer's input norm does not keep
    # rotary cos/sin: one row per position (shared by the batch) in the residual's dtype (fp32 in
    # full, bf16 in LoRA); nll's total weight: 4
    rotary = 2 * cfg.head_dim * seq_len * (4 if method == "full" else 2)
    return tokens * (per_token + LOSS_SAVED * cfg.vocab_size) + rotary + 4


def weight_copies(cfg: ModelConfig, method: str, rank: int = 8) -> int:
    """Bytes of the bf16 copies autocast makes of fp32 weights and keeps for the backward. Full:
    every projection and the output head (not the embedding lookup or the norms). LoRA: the
    adapters, but not lora_A of the first layer's q, k, v, whose input needs no gradient."""
    if method == "full":
        pc = count_params(cfg)
        return 2 * ((pc.per_layer - 2 * cfg.d_model) * cfg.n_layers + cfg.vocab_size * cfg.d_model)
    return 2 * (lora_params(cfg, rank) - 3 * rank * cfg.d_model)


def checkpointed_bytes(cfg: ModelConfig, method: str, micro_batch: int, seq_len: int, rank: int,
                       dropout: float) -> int:
    """HF gradient checkpointing: every layer's input (fp32 residual in full, bf16 in LoRA) and
    one layer's activations while it is recomputed."""
    tokens = micro_batch * seq_len
    full = saved_bytes(cfg, method, micro_batch, seq_len, rank, dropout)
    layers = cfg.n_layers * layer_bytes(cfg, method, rank, dropout) * tokens
    return full - layers + tokens * (cfg.n_layers * (4 if method == "full" else 2) * cfg.d_model
                                     + layer_bytes(cfg, method, rank, dropout))


def breakdown(cfg: ModelConfig, n_params: float, micro_batch: int, seq_len: int, method: str, *,
              rank: int = 8, dropout: float = 0.05, devices: int = 1, checkpointing: bool = False,
              accumulating: bool = False) -> dict:
    """GB per device at the step's peak (the start of the backward). devices > 1: weights,
    gradients and optimizer state sharded (FSDP), plus two gathered bf16 layers."""
    tokens = micro_batch * seq_len
    trainable = n_params if method == "full" else lora_params(cfg, rank)
    frozen = 0 if method == "full" else n_params
    weights = 4 * trainable + 2 * frozen + weight_copies(cfg, method, rank)
    grads = 4 * trainable if accumulating else 0  # None between steps otherwise
    optim = 8 * trainable
    states = [weights, grads, optim]
    if devices > 1:
        states = [x / devices for x in states]
        states[0] += 2 * 2 * count_params(cfg).per_layer
    acts = (checkpointed_bytes(cfg, method, micro_batch, seq_len, rank, dropout) if checkpointing
            else saved_bytes(cfg, method, micro_batch, seq_len, rank, dropout))
    acts += (LOSS_PEAK - LOSS_SAVED) * cfg.vocab_size * tokens
    total = sum(states) + acts
    return {"weights_gb": states[0] / GB, "gradients_gb": states[1] / GB, "optimizer_gb": states[2] / GB,
            "activations_gb": acts / GB, "total_gb": total / GB, "trainable_params": trainable}


def min_devices(cfg: ModelConfig, n_params: float, micro_batch: int, seq_len: int, method: str,
                capacity_gb: float, **kw) -> int | None:
    """Fewest devices (FSDP) on which one micro-batch fits; None when the activations alone do not."""
    usable = capacity_gb * HEADROOM
    if breakdown(cfg, n_params, micro_batch, seq_len, method, **kw)["total_gb"] <= usable:
        return 1
    two = breakdown(cfg, n_params, micro_batch, seq_len, method, devices=2, **kw)
    gathered = 2 * 2 * count_params(cfg).per_layer / GB
    sharded = (two["total_gb"] - two["activations_gb"] - gathered) * 2
    room = usable - two["activations_gb"] - gathered
    return None if room <= 0 else max(2, math.ceil(sharded / room))
