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
from torch.optim.adamw import adamw

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
    squeeze = x.dim() == 2
    if squeeze:
        x = x[None]
    for _ in range(steps):
        s = x @ x.mT
        # b·s + c·s·s, then a·x + that·x: two GEMMs whose scaling and sum run in their epilogue,
        # where separate products and adds took four more launches per iteration
        x = torch.baddbmm(x, torch.baddbmm(s, s, s, beta=b, alpha=c), x, beta=a)
    if squeeze:
        x = x[0]
    return (x.mT if transposed else x).to(g.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """Skips a step on the device when `found_inf` (a 0-dim float tensor, the protocol of
    torch's fused AdamW and GradScaler) holds 1: nothing changes, not even the step counts, and
    the host need not read anything before calling step()."""

    _step_supports_amp_scaling = True  # honours found_inf as torch's fused AdamW does

    def __init__(self, groups: list[dict], lr: float, betas=(0.9, 0.95), eps=1e-8, momentum=0.95,
                 weight_decay=0.0):
        defaults = dict(lr=lr, betas=betas, eps=eps, momentum=momentum, weight_decay=weight_decay,
                        muon=False, lr_scale=1.0)
        super().__init__(groups, defaults)
        self.found_inf: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)

    def _adamw_step(self, group: dict) -> None:
        """torch's fused AdamW kernel over the group's tensors (the embedding, head, every norm
        gain): one launch, per-tensor step counts on the device (a tensor that had no gradient
        on some step keeps its own bias correction), and found_inf honoured inside it."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state.update(step=torch.zeros((), dtype=torch.float32, device=p.device),
                             exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            elif not torch.is_tensor(state["step"]):  # a checkpoint from before step counts were tensors
                state["step"] = torch.tensor(float(state["step"]), device=p.device)
        b1, b2 = group["betas"]
        adamw(params, [p.grad for p in params], [self.state[p]["exp_avg"] for p in params],
              [self.state[p]["exp_avg_sq"] for p in params], [], [self.state[p]["step"] for p in params],
              fused=True, found_inf=self.found_inf, amsgrad=False, beta1=b1, beta2=b2, lr=group["lr"],
              weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)

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
        for p, _ in params:
            if "momentum" not in self.state[p]:
                self.state[p]["momentum"] = torch.zeros_like(p)
        bufs = [self.state[p]["momentum"] for p, _ in params]
        skip = self.found_inf
        if skip is not None:  # a skipped step must leave momentum and weights as they are
            keep = skip.reshape(()) == 0
            grads = [torch.where(keep, g, 0.0) for g in grads]  # no NaN/inf reaches the state
            torch._foreach_mul_(bufs, 1 - (1 - mom) * keep.float())  # × momentum, or × 1
        else:
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
        if skip is not None:  # lr × 0 on a skipped step: the (finite) update is not applied
            rate = -lr * keep.float()
            if wd:
                torch._foreach_mul_(ps, 1 + rate * wd)
            torch._foreach_mul_(updates, rate)
            torch._foreach_add_(ps, updates)
            return
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
