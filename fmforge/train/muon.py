"""Muon (MomentUm Orthogonalized by Newton-Schulz) for the 2-D weights of the blocks,
AdamW for everything else (embeddings, output head, norm gains), in one optimizer so a
checkpoint holds one state dict.

Muon: keep a Nesterov momentum buffer per matrix, replace the update by the nearest
semi-orthogonal matrix (a few Newton-Schulz iterations on the normalised update, in
bf16), and scale it so every matrix moves by a similar RMS whatever its shape. Per step
it costs a few extra small matmuls per weight; per token it learns faster than AdamW.
"""
from __future__ import annotations

import torch

from fmforge.config import TrainConfig


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately U·Vᵀ of g = U·S·Vᵀ: a quintic Newton-Schulz iteration whose
    coefficients push every singular value towards 1 quickly (not exactly 1: that is
    fine for an update direction)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)  # g: (..., rows, cols)
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        s = x @ x.mT
        x = a * x + (b * s + c * s @ s) @ x
    return (x.mT if transposed else x).to(g.dtype)


class MuonAdamW(torch.optim.Optimizer):
    def __init__(self, groups: list[dict], lr: float, betas=(0.9, 0.95), eps=1e-8, momentum=0.95,
                 weight_decay=0.0):
        defaults = dict(lr=lr, betas=betas, eps=eps, momentum=momentum, weight_decay=weight_decay,
                        muon=False, lr_scale=1.0)
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)

    def _adamw_step(self, group: dict) -> None:
        """AdamW over the group's tensors with foreach ops: a few launches per group instead of
        several per tensor (the embedding, head and every norm gain), so the step's host time
        does not grow with the layer count. Tensors are grouped by their step count (equal,
        unless some had no gradient on some step), which sets the bias corrections."""
        lr, wd, (b1, b2), eps = group["lr"], group["weight_decay"], group["betas"], group["eps"]
        by_step: dict[int, list[torch.Tensor]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "step" not in state:
                state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            state["step"] += 1
            by_step.setdefault(state["step"], []).append(p)
        for t, ps in by_step.items():
            grads = [p.grad for p in ps]
            m = [self.state[p]["exp_avg"] for p in ps]
            v = [self.state[p]["exp_avg_sq"] for p in ps]
            torch._foreach_lerp_(m, grads, 1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
            denom = torch._foreach_div(v, 1 - b2**t)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, eps)
            if wd:
                torch._foreach_mul_(ps, 1 - lr * wd)
            torch._foreach_addcdiv_(ps, m, denom, value=-lr / (1 - b1**t))

    def _muon_step(self, group: dict) -> None:
        """Each projection's whole matrix is orthogonalised: a fused weight (q|k|v, gate|up)
        is cut into its projections first, and a sharded (FSDP) update is gathered, so the
        result is the one-device result on any number of ranks. Every rank orthogonalises
        every matrix (redundant work, no extra communication beyond the gather); pieces of
        one shape go through one batched iteration."""
        lr, wd, mom = group["lr"], group["weight_decay"], group["momentum"]
        splits_of = group.get("splits") or [()] * len(group["params"])
        params = [(p, splits) for p, splits in zip(group["params"], splits_of) if p.grad is not None]
        if not params:
            return
        pieces = []  # (param index, piece index, tensor)
        grads = [p.grad for p, _ in params]
        bufs = [self.state[p].setdefault("momentum", torch.zeros_like(p)) for p, _ in params]
        torch._foreach_mul_(bufs, mom)
        torch._foreach_add_(bufs, grads)
        nesterov = torch._foreach_add(grads, bufs, alpha=mom)
        for n, ((p, splits), u) in enumerate(zip(params, nesterov)):
            full = u.full_tensor() if hasattr(u, "full_tensor") else u  # DTensor: gather the matrix
            parts = full.split(list(splits), dim=0) if splits else [full]
            pieces += [(n, k, t) for k, t in enumerate(parts)]
        by_shape: dict[tuple, list] = {}
        for item in pieces:
            by_shape.setdefault(tuple(item[2].shape), []).append(item)
        done: dict[tuple[int, int], torch.Tensor] = {}
        for shape, items in by_shape.items():
            ortho = orthogonalize(torch.stack([t for _, _, t in items]))
            scale = max(1.0, shape[0] / shape[1]) ** 0.5
            if scale != 1.0:
                ortho = ortho * scale
            for (n, k, _), o in zip(items, ortho.unbind(0)):
                done[(n, k)] = o
        updates = []
        for n, (p, splits) in enumerate(params):
            k = len(splits) if splits else 1
            update = torch.cat([done[(n, i)] for i in range(k)], dim=0) if k > 1 else done[(n, 0)]
            if hasattr(p, "device_mesh"):  # back to this rank's shard (every rank holds the whole update)
                from torch.distributed.tensor import distribute_tensor

                update = distribute_tensor(update, p.device_mesh, p.placements, src_data_rank=None)
            updates.append(update)
        ps = [p for p, _ in params]
        if wd:
            torch._foreach_mul_(ps, 1 - lr * wd)
        torch._foreach_add_(ps, updates, alpha=-lr)


def projection_splits(model: torch.nn.Module) -> dict[int, tuple[int, ...]]:
    """id(weight) -> the row counts of the projections fused in it (q, k, v; gate, up)."""
    from fmforge.model.transformer import Attention, SwiGLU

    out = {}
    for m in model.modules():
        if isinstance(m, Attention):
            out[id(m.wqkv.weight)] = (m.n_heads * m.hd, m.n_kv * m.hd, m.n_kv * m.hd)
        elif isinstance(m, SwiGLU):
            half = m.w13.weight.shape[0] // 2
            out[id(m.w13.weight)] = (half, half)
    return out


def build_muon(model: torch.nn.Module, cfg: TrainConfig) -> MuonAdamW:
    """Muon for the blocks' matrices at train.muon_lr; AdamW at train.lr for the rest.
    `lr_scale` keeps the two rates in proportion under the shared schedule."""
    matrices, embeds, gains = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and "embed" not in name and "lm_head" not in name:
            matrices.append(p)
        elif p.dim() >= 2:
            embeds.append(p)
        else:
            gains.append(p)
    ratio = cfg.muon_lr / cfg.lr
    fused = projection_splits(model)
    groups = [
        {"params": matrices, "muon": True, "lr_scale": ratio, "weight_decay": cfg.weight_decay,
         "splits": [fused.get(id(p), ()) for p in matrices]},
        {"params": embeds, "muon": False, "weight_decay": 0.0},
        {"params": gains, "muon": False, "weight_decay": 0.0},
    ]
    return MuonAdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
