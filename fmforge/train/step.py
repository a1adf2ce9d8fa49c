"""One optimizer step: accumulate gradients over micro-batches, reduce them once, clip, step.

Also the batch arithmetic: the global batch in tokens defines the optimisation; the number
of micro-batches each rank accumulates follows from the world size. Reused by any loop that
trains a Transformer-like module on (inputs, targets) batches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fmforge.errors import UserError
from fmforge.train.parallelize import Runtime, all_reduce_mean, gradient_sync


def accumulation(global_batch_tokens: int | None, micro_batch: int, seq: int, world: int) -> int:
    """Micro-batches per rank per step. The global batch must be a whole number of
    micro-batches on every rank: otherwise say which values would work, never round."""
    per_micro = micro_batch * seq * world
    if not global_batch_tokens:
        return 1
    if global_batch_tokens % per_micro:
        lo = max(1, global_batch_tokens // per_micro) * per_micro
        raise UserError(
            f"train.global_batch_tokens={global_batch_tokens:,} is not a multiple of train.micro_batch × "
            f"model.context_length × ranks = {micro_batch}×{seq}×{world} = {per_micro:,} tokens: set it to "
            f"{lo:,} or {lo + per_micro:,}, or change train.micro_batch so that it divides")
    return global_batch_tokens // per_micro


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU batch on `device` without making the host wait for the GPU. From pageable memory
    the CUDA driver stages the copy and may first wait for the stream to drain (the CUDA
    runtime's "API synchronization behavior"): the host would stall until the step before had
    run, and the GPU would then idle while the host queued the next one. From pinned memory
    (torch's caching host allocator, reused once the copy is done) the copy is only queued."""
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


@dataclass
class StepResult:
    loss: float  # mean over the global batch, the same on every rank
    grad_norm: float  # before clipping
    finite: bool  # False: the step was not applied (NaN/inf loss or gradient)


class TrainStep:
    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, rt: Runtime, accum: int,
                 grad_clip: float):
        self.model, self.opt, self.rt, self.accum, self.grad_clip = model, opt, rt, accum, grad_clip
        # Optimizers that honour found_inf (torch's fused AdamW, MuonAdamW) skip a non-finite step
        # on the device. Sharded (DTensor) weights keep the host check: found_inf is a plain tensor.
        self.skip_on_device = bool(getattr(opt, "_step_supports_amp_scaling", False)) and rt.strategy != "fsdp"

    def __call__(self, next_batch) -> StepResult:
        """One step, its loss and norm read back: `launch(next_batch).result()`."""
        return self.launch(next_batch).result()

    def launch(self, next_batch) -> "PendingStep":
        """Queue one step; `next_batch()` gives this rank's (inputs, targets) on the CPU,
        `accum` times. With a device-side skip nothing is read back here: the caller may queue
        the next step before reading this one's result (fmforge.train.trainer does)."""
        rt, model = self.rt, self.model
        total = torch.zeros((), device=rt.device)
        for i in range(self.accum):
            x, y = next_batch()
            x, y = to_device(x, rt.device), to_device(y, rt.device)
            with gradient_sync(model, rt, sync=i == self.accum - 1):
                with rt.autocast():
                    loss = model(x, y)
                (loss / self.accum).backward()
            total += loss.detach() / self.accum
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip or float("inf"))
        total = all_reduce_mean(total, rt)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        if self.skip_on_device:
            # Decide on the device whether the step is applied and queue the optimizer behind the
            # backward; loss and norm are read later (PendingStep.result), so the host never
            # waits before the optimizer, nor, when the caller runs ahead, between steps.
            ok = torch.isfinite(total) & torch.isfinite(grad_norm)
            self.opt.found_inf = (~ok).float()  # 0-dim, as GradScaler makes it
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            return PendingStep(torch.stack([total.float(), grad_norm.float()]))
        loss_val, gn = float(total), float(grad_norm)
        finite = math.isfinite(loss_val) and math.isfinite(gn)
        if finite:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return PendingStep(None, StepResult(loss_val, gn, finite))


class PendingStep:
    """A launched step's loss and gradient norm: still on the device, or already read."""

    def __init__(self, values: torch.Tensor | None, result: StepResult | None = None):
        self.values, self._result = values, result

    def result(self) -> StepResult:
        if self._result is None:
            loss_val, gn = self.values.tolist()  # waits for the step's kernels
            self._result = StepResult(loss_val, gn, math.isfinite(loss_val) and math.isfinite(gn))
        return self._result
