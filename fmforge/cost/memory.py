"""Training memory per device: weights, gradients, optimizer state, activations.

States, AdamW in mixed precision (Rajbhandari et al. 2020, ZeRO, Section 3.1): bf16 weights (2
bytes/param) + bf16 gradients (2) + fp32 master weights, momentum and variance (4 + 4 + 4) =
16 bytes/param. DDP replicates all of it on every device; FSDP (ZeRO-3) shards all of it,
plus one gathered layer in flight and the next one prefetched.

Activations, counted the way Korthikanti et al. 2022 (Section 4.1) count them, for this
repository's block (RMSNorm, GQA with fused attention, SwiGLU, no dropout), in bytes per
token per layer at 2 bytes an element:
    attention: block input, normed input, q, k, v, attention output = 4·d + 2·kv_dim
    MLP:       block input, normed input, gate, up, silu(gate), gate·up = 2·d + 4·ffn
so 2·(6·d + 2·kv_dim + 4·ffn); the logits add 6 bytes per vocabulary entry (bf16 + fp32 for
the loss). With train.loss_chunk_tokens = c (fmforge.model.chunked_loss) the head instead keeps
∂h (2·d bytes a token) and ∂W (4 bytes a weight, fp32) for the backward, and holds one chunk's
logits at a time: c × vocab entries of bf16 logits and two fp32 temporaries (10 bytes). Fused attention stores no T×T scores. With activation checkpointing each layer keeps
only its input (2·d bytes) and one layer at a time is recomputed in full. Activations are per
micro-batch and are not sharded by DDP or FSDP.

GB here is 10^9 bytes; a device's nominal capacity is treated the same way (conservative).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fmforge.config import ModelConfig
from fmforge.cost.checks import CostError
from fmforge.hardware import Accelerator
from fmforge.model.flops import count_params

if TYPE_CHECKING:
    from fmforge.cost.estimate import ModelSpec

STATE_BYTES = {"weights": 2, "gradients": 2, "optimizer": 12}  # per trainable parameter
FROZEN_BYTES = 2  # a frozen bf16 weight (LoRA base)
HEADROOM = 0.90  # usable share of device memory: CUDA context, allocator fragmentation, comm buffers
SHARDINGS = ("none", "ddp", "fsdp")
GB = 1e9


def activation_bytes_per_token_layer(cfg: ModelConfig) -> int:
    kv_dim = cfg.kv_heads * cfg.head_dim
    return 2 * (6 * cfg.d_model + 2 * kv_dim + 4 * cfg.hidden_dim)


def head_bytes(cfg: ModelConfig, tokens: int, loss_chunk: int | None = None) -> float:
    """The output head's and loss's memory at their peak (see the module's docstring)."""
    if not loss_chunk:
        return tokens * cfg.vocab_size * 6
    return 2 * cfg.d_model * tokens + 4 * cfg.vocab_size * cfg.d_model + 10 * min(loss_chunk, tokens) * cfg.vocab_size


def activation_bytes(cfg: ModelConfig, micro_batch: int, seq_len: int, checkpointing: bool,
                     loss_chunk: int | None = None) -> float:
    tokens = micro_batch * seq_len
    logits = head_bytes(cfg, tokens, loss_chunk)
    per_layer = activation_bytes_per_token_layer(cfg) * tokens
    if checkpointing:
        return cfg.n_layers * 2 * cfg.d_model * tokens + per_layer + logits
    return cfg.n_layers * per_layer + logits


def _parts(n_params: float, cfg: ModelConfig, trainable: float | None) -> tuple[float, float, float]:
    """(trainable, frozen, gathered-layer bytes) for a model."""
    trainable = n_params if trainable is None else trainable
    # FSDP all-gathers the bf16 weights of the layer being computed and prefetches the next one.
    return trainable, n_params - trainable, 2 * 2 * count_params(cfg).per_layer


def breakdown(n_params: float, cfg: ModelConfig, micro_batch: int, seq_len: int, devices: int,
              sharding: str, checkpointing: bool, trainable: float | None = None,
              loss_chunk: int | None = None) -> dict:
    """GB per device. `trainable` < n_params means the rest is frozen (LoRA)."""
    trainable, frozen, gathered = _parts(n_params, cfg, trainable)
    shard = devices if sharding == "fsdp" else 1
    weights = (STATE_BYTES["weights"] * trainable + FROZEN_BYTES * frozen) / shard
    if sharding == "fsdp" and devices > 1:
        weights += gathered
    grads = STATE_BYTES["gradients"] * trainable / shard
    optim = STATE_BYTES["optimizer"] * trainable / shard
    acts = activation_bytes(cfg, micro_batch, seq_len, checkpointing, loss_chunk)
    total = weights + grads + optim + acts
    return {"weights_gb": weights / GB, "gradients_gb": grads / GB, "optimizer_gb": optim / GB,
            "activations_gb": acts / GB, "total_gb": total / GB}


def min_devices(n_params: float, cfg: ModelConfig, micro_batch: int, seq_len: int, sharding: str,
                checkpointing: bool, capacity_gb: float, trainable: float | None = None,
                loss_chunk: int | None = None) -> int | None:
    """Fewest devices on which one micro-batch fits; None when no count does."""
    usable = capacity_gb * HEADROOM * GB
    if breakdown(n_params, cfg, micro_batch, seq_len, 1, sharding, checkpointing, trainable,
                 loss_chunk)["total_gb"] * GB <= usable:
        return 1
    if sharding != "fsdp":
        return None  # every device holds a full replica
    trainable, frozen, gathered = _parts(n_params, cfg, trainable)
    states = sum(STATE_BYTES.values()) * trainable + FROZEN_BYTES * frozen
    room = usable - gathered - activation_bytes(cfg, micro_batch, seq_len, checkpointing, loss_chunk)
    if room <= 0:
        return None  # activations alone overflow: checkpoint, or shrink the micro-batch
    return max(2, math.ceil(states / room))


def memory_report(model: "ModelSpec", acc: Accelerator, devices: int, sharding: str = "auto",
                  trainable: float | None = None) -> dict:
    """Every sharding with and without checkpointing, and the one chosen for `per_device_gb`."""
    chosen = ("none" if devices == 1 else "fsdp") if sharding == "auto" else sharding
    if chosen not in SHARDINGS:
        raise CostError(f"--sharding: unknown sharding '{sharding}'; allowed: auto, {', '.join(SHARDINGS)}")
    cfg, b, t = model.cfg, model.micro_batch, model.seq_len
    schemes = {}
    for s in SHARDINGS:
        n = 1 if s == "none" else devices
        for ckpt in (False, True):
            row = breakdown(model.params, cfg, b, t, n, s, ckpt, trainable, model.loss_chunk_tokens)
            row.update(devices=n, fits=row["total_gb"] <= acc.memory_gb * HEADROOM,
                       min_devices=min_devices(model.params, cfg, b, t, s, ckpt, acc.memory_gb, trainable,
                                               model.loss_chunk_tokens))
            schemes[f"{s}{'+ckpt' if ckpt else ''}"] = row
    picked = schemes[chosen]
    return {"sharding": chosen, "checkpointing": False, "per_device_gb": picked["total_gb"],
            "fits": picked["fits"], "capacity_gb": acc.memory_gb, "usable_fraction": HEADROOM,
            "micro_batch": b, "seq_len": t, "loss_chunk_tokens": model.loss_chunk_tokens,
            "bytes_per_param": sum(STATE_BYTES.values()),
            "schemes": schemes}
