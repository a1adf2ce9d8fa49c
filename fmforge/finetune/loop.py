"""The fine-tuning loop: micro-batches -> loss on the trained tokens only -> AdamW steps.

It is pretraining's experience on a smaller scale: the same optimizer construction and
learning-rate schedule (fmforge.train.optim), the same live progress line and one
metrics.jsonl line per optimizer step (step, loss, lr, grad_norm, tokens, tokens_per_s,
elapsed_s). The loss of a step is the mean over every trained token of its micro-batches
(a sum divided by their count, so gradient accumulation weighs tokens, not rows).

Checkpoints (fmforge.finetune.checkpoint) are saved by steps, by time, on SIGINT/SIGTERM and
at the end; a resumed loop restores weights, AdamW state and RNG states and skips the
micro-batches already trained on, so it takes the steps an uninterrupted run would take.

Precision: on a GPU, bf16 autocast; full fine-tuning keeps fp32 weights (16 bytes a
parameter with AdamW), LoRA and prompt tuning keep the frozen base in bf16 and the trained
weights in fp32 (the accounting of `fmforge cost plan`).
"""
from __future__ import annotations

import contextlib
import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from fmforge.config import FinetuneConfig, TrainConfig
from fmforge.finetune.checkpoint import Checkpoints
from fmforge.finetune.data import IGNORE, Example, batches
from fmforge.train.metrics import truncate_metrics
from fmforge.train.step import to_device


@dataclass
class Runtime:
    device: torch.device
    amp: torch.dtype | None  # autocast dtype, None: plain fp32

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)


def runtime(cfg: FinetuneConfig) -> Runtime:
    dev = cfg.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    if device.type == "cuda" and not torch.cuda.is_available():
        from fmforge.errors import UserError
        raise UserError(f"finetune.device {cfg.device}: CUDA is not available here; use cpu or auto")
    amp = {"auto": torch.bfloat16 if device.type == "cuda" else None, "float32": None,
           "bfloat16": torch.bfloat16}[cfg.dtype]
    return Runtime(device, amp)


def virtual_tokens(model) -> int:
    """Prompt tuning prepends this many positions to the logits."""
    pc = getattr(model, "peft_config", None)
    if not pc:
        return 0
    c = pc[model.active_adapter]
    return c.num_virtual_tokens if c.is_prompt_learning else 0


def collate(examples: list[Example], pad_id: int, device: torch.device) -> dict:
    """Right-padded tensors. Packed rows carry position_ids and no attention mask (transformers
    then keeps each packed example's attention to itself); padding is its own segment."""
    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    tgt = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    packed = any(e.position_ids is not None for e in examples)
    pos = torch.zeros((len(examples), n), dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e.input_ids)
        ids[i, :k] = torch.tensor(e.input_ids)
        tgt[i, :k] = torch.tensor(e.targets())
        mask[i, :k] = 1
        pos[i, :k] = torch.tensor(e.position_ids if e.position_ids is not None else range(k))
        pos[i, k:] = torch.arange(n - k)
    out = {"input_ids": ids, "targets": tgt, "real_tokens": int(mask.sum())}
    if packed:
        out["position_ids"] = pos
    else:
        out["attention_mask"] = mask
    return {k: to_device(v, torch.device(device)) if torch.is_tensor(v) else v for k, v in out.items()}


def loss_sum(model, batch: dict, rt: Runtime, n_virtual: int = 0, accuracy: bool = False,
             chunk_tokens: int | None = None):
    """(summed cross-entropy over the trained tokens, their count[, how many the argmax gets right]).
    chunk_tokens (finetune.loss_chunk_tokens; not with accuracy, which needs every logit): the head
    and the loss that many tokens at a time (fmforge.finetune.head)."""
    kw = {k: batch[k] for k in ("attention_mask", "position_ids") if k in batch}
    if chunk_tokens and not accuracy:
        from fmforge.finetune.head import hidden_states_out
        from fmforge.model.chunked_loss import chunked_loss_head

        with rt.autocast():
            with hidden_states_out(model) as weight:
                h = model(input_ids=batch["input_ids"], use_cache=False, **kw).logits
            loss = chunked_loss_head(h[:, n_virtual:], weight, batch["targets"], "sum", chunk_tokens=chunk_tokens)
        return loss, int((batch["targets"] != IGNORE).sum())
    with rt.autocast():
        logits = model(input_ids=batch["input_ids"], use_cache=False, **kw).logits
    logits = logits[:, n_virtual:]
    tgt = batch["targets"]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    if accuracy:
        return loss, int((tgt != IGNORE).sum()), int(((logits.argmax(-1) == tgt) & (tgt != IGNORE)).sum())
    return loss, int((tgt != IGNORE).sum())


@torch.no_grad()
def evaluate_loss(model, examples: list[Example], micro_batch: int, rt: Runtime, pad_id: int) -> dict:
    """Mean nats per trained token over `examples` (the held-out completion loss), and the share
    of those tokens the model's argmax predicts (teacher-forced token accuracy)."""
    was = model.training
    model.eval()
    total, count, right = 0.0, 0, 0
    n_virtual = virtual_tokens(model)
    for i in range(0, len(examples), micro_batch):
        s, c, r = loss_sum(model, collate(examples[i: i + micro_batch], pad_id, rt.device), rt, n_virtual, True)
        total, count, right = total + float(s), count + c, right + r
    model.train(was)
    return {"loss": total / max(1, count), "token_accuracy": right / max(1, count), "tokens": count,
            "examples": len(examples)}


@dataclass
class LoopResult:
    steps: int
    tokens: int  # real (unpadded) tokens through the model
    trained_tokens: int
    seconds: float
    final_loss: float
    step_seconds: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    peak_memory_gb: float | None = None
    memory_kind: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {"steps": self.steps, "tokens": self.tokens, "trained_tokens": self.trained_tokens,
                "seconds": self.seconds, "tokens_per_s": self.tokens_per_s, "final_loss": self.final_loss,
                "peak_memory_gb": self.peak_memory_gb, "memory_kind": self.memory_kind}


def planned_steps(cfg: FinetuneConfig, rows: int) -> int:
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * rows / (cfg.micro_batch * cfg.grad_accum)))


def schedule_config(cfg: FinetuneConfig, steps: int) -> TrainConfig:
    """Pretraining's optimizer and schedule settings, filled from the finetune section."""
    return TrainConfig(max_steps=steps, lr=cfg.learning_rate(), warmup_steps=cfg.warmup_steps, schedule=cfg.schedule,
                       min_lr_ratio=cfg.min_lr_ratio, weight_decay=cfg.weight_decay, beta1=0.9, beta2=0.999,
                       grad_clip=cfg.grad_clip, optimizer="adamw", max_warmup_fraction=0.25)


def peak_memory(rt: Runtime) -> tuple[float, str]:
    if rt.device.type == "cuda":
        return torch.cuda.max_memory_allocated(rt.device) / 1e9, "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, "process peak RSS"


def train_loop(model, examples: list[Example], cfg: FinetuneConfig, rt: Runtime, pad_id: int,
               out_dir: Path | None = None, verbose: bool = True, label: str = "finetune",
               checkpoints: Checkpoints | None = None) -> LoopResult:
    """Train `model` on `examples`; with `checkpoints`, save them as the finetune section says
    (and on SIGINT/SIGTERM, then TrainingInterrupted) and continue the one it opened to resume."""
    from fmforge.train.optim import build_optimizer, lr_at, set_lr
    from fmforge.train.signals import StopRequest, TrainingInterrupted, stop_on_signals

    if verbose:  # pretraining's progress line
        from fmforge.train.metrics import ProgressLine
        from fmforge.train.metrics import fmt_time as _fmt_time
    else:
        ProgressLine, _fmt_time = _Silent, str

    steps = planned_steps(cfg, len(examples))
    tcfg = schedule_config(cfg, steps)
    opt = build_optimizer(model, tcfg, rt.device.type)
    params = [p for p in model.parameters() if p.requires_grad]
    n_virtual = virtual_tokens(model)
    if cfg.loss_chunk_tokens:
        from fmforge.finetune.head import check_chunked_head

        check_chunked_head(model)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    torch.manual_seed(cfg.seed)
    res = LoopResult(0, 0, 0, 0.0, float("nan"))
    consumed = 0  # micro-batches drawn from the stream
    if checkpoints is not None and checkpoints.state is not None:
        if checkpoints.step > steps:
            from fmforge.errors import UserError
            raise UserError(f"cannot resume from {checkpoints.resume_from}: it is at step {checkpoints.step}, past "
                            f"this run's {steps} planned steps; raise finetune.max_steps or finetune.epochs")
        done = checkpoints.restore(model, opt, rt.device)  # weights, AdamW state, RNG states
        res.steps, res.tokens, res.trained_tokens = done["step"], done["tokens"], done["trained_tokens"]
        res.seconds, res.final_loss, consumed = done["seconds"], done["final_loss"], done["micro_batches"]
    start = res.steps
    log = ProgressLine(verbose)
    metrics = None
    if out_dir is not None:
        if start:  # lines past the checkpoint were written by the interrupted run: they come again
            truncate_metrics(out_dir / "metrics.jsonl", start)
        metrics = open(out_dir / "metrics.jsonl", "a" if start else "w")

    def stream():
        epoch = 0
        while True:
            yield from batches(examples, cfg.micro_batch, cfg.seed, epoch)
            epoch += 1

    source = stream()
    for _ in range(consumed):  # the data order is a function of (seed, epoch): skip what was trained on
        next(source)

    def progress() -> dict:
        return {"step": res.steps, "micro_batches": consumed, "tokens": res.tokens,
                "trained_tokens": res.trained_tokens, "seconds": res.seconds, "final_loss": res.final_loss,
                "planned_steps": steps}

    last_save = time.monotonic()
    # signals are caught only where a checkpoint can be saved; elsewhere Ctrl-C stops at once
    guard = stop_on_signals() if checkpoints is not None else contextlib.nullcontext(StopRequest())
    model.train()
    try:
        with guard as stop:
            for step in range(start, steps):
                t0 = time.perf_counter()
                lr = lr_at(step, steps, tcfg)
                set_lr(opt, lr)
                group = [collate(next(source), pad_id, rt.device) for _ in range(cfg.grad_accum)]
                consumed += cfg.grad_accum
                count = sum(int((b["targets"] != IGNORE).sum()) for b in group)
                total = torch.zeros((), device=rt.device)
                for b in group:
                    s, _ = loss_sum(model, b, rt, n_virtual, chunk_tokens=cfg.loss_chunk_tokens)
                    (s / max(1, count)).backward()
                    total += s.detach()
                gn = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or float("inf")))
                opt.step()
                opt.zero_grad(set_to_none=True)
                loss = float(total) / max(1, count)  # reading it back syncs the device: dt is the step's time
                dt = time.perf_counter() - t0
                ntok = sum(b["real_tokens"] for b in group)
                res.steps, res.tokens, res.trained_tokens = step + 1, res.tokens + ntok, res.trained_tokens + count
                res.seconds += dt
                res.final_loss = loss
                res.step_seconds.append(dt)
                res.step_tokens.append(ntok)
                if metrics is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == steps):
                    metrics.write(json.dumps({"step": step + 1, "loss": loss, "lr": lr, "grad_norm": gn,
                                              "tokens": res.tokens, "trained_tokens": res.trained_tokens,
                                              "tokens_per_s": ntok / dt, "elapsed_s": res.seconds}) + "\n")
                    metrics.flush()
                p = (step + 1) / steps
                log.update(f"[{label}] step {step + 1}/{steps} | loss {loss:.4f} | lr {lr:.2e} | {ntok / dt:,.0f} "
                           f"tok/s | {p:.0%} | ETA {_fmt_time(res.seconds / p - res.seconds)}")
                if not math.isfinite(loss):  # no checkpoint of a diverged state: the last good one stays
                    from fmforge.errors import UserError
                    raise UserError(f"fine-tuning diverged at step {step + 1} (loss {loss}); lower finetune.lr")
                if checkpoints is None:
                    continue
                if stop.signum:
                    err = TrainingInterrupted(stop.signum, checkpoints.save(model, opt, progress(), rt.device))
                    print(f"\n[{label}] step {step + 1}: {err}", file=sys.stderr, flush=True)
                    raise err
                due = (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0) or \
                    (cfg.checkpoint_every_s and time.monotonic() - last_save >= cfg.checkpoint_every_s)
                if due and step + 1 < steps:  # the last step's is saved below
                    checkpoints.save(model, opt, progress(), rt.device)
                    last_save = time.monotonic()
            if checkpoints is not None and res.steps > start:
                checkpoints.save(model, opt, progress(), rt.device)
    finally:
        if metrics is not None:
            metrics.close()
    log.update(f"[{label}] done: {res.steps} steps, {res.tokens:,} tokens in {_fmt_time(res.seconds)}, "
               f"final loss {res.final_loss:.4f}", final=True)
    res.peak_memory_gb, res.memory_kind = peak_memory(rt)
    model.eval()
    return res


class _Silent:
    def __init__(self, enabled: bool):
        pass

    def update(self, text: str, final: bool = False) -> None:
        pass


def say(text: str, verbose: bool = True) -> None:
    if verbose:
        print(text, file=sys.stderr, flush=True)
