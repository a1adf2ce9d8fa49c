"""Optimizer and learning-rate schedule."""
from __future__ import annotations

import math

import torch

from fmforge.config import TrainConfig


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device_type: str) -> torch.optim.Optimizer:
    """AdamW; weight decay only on 2-D weight matrices, not on norms or embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "muon":
        from fmforge.train.muon import build_muon

        return build_muon(model, cfg)
    # fused on every device: one kernel per step, and it can skip a non-finite step on the device
    # (found_inf, fmforge.train.step) so the host never waits before the optimizer
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=True)


def warmup_length(cfg: TrainConfig, horizon: int | None) -> float:
    """warmup_steps, at most max_warmup_fraction of the planned steps (once they are known),
    so a short run leaves warm-up too."""
    if horizon is None:
        return cfg.warmup_steps
    return min(cfg.warmup_steps, cfg.max_warmup_fraction * horizon)


def lr_at(step: int, horizon: int | None, cfg: TrainConfig) -> float:
    """Learning rate for step `step` (0-based) of a run planned to take `horizon` steps
    (None while a timed run still measures its speed: the schedule has not moved yet)."""
    warmup = warmup_length(cfg, horizon)
    if warmup and step < warmup:
        return cfg.lr * min(1.0, (step + 1) / warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    p = min(max(step / horizon, 0.0), 1.0) if horizon else 0.0
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "wsd":
        start = 1.0 - cfg.decay_fraction
        if p <= start:
            return cfg.lr
        return floor + (cfg.lr - floor) * (1.0 - (p - start) / cfg.decay_fraction)
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * p))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
