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

        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            raise ValueError("train.optimizer=muon runs on one device for now; use adamw with several")

        return build_muon(model, cfg)
    fused = device_type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=fused)


def lr_at(progress: float, step: int, cfg: TrainConfig) -> float:
    """Learning rate for a step; `progress` in [0, 1] is how much of the budget is used."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    p = min(max(progress, 0.0), 1.0)
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
