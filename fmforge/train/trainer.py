"""Pretraining, as a narrative: build, (resume), loop over steps, checkpoint, finish.

Outputs in the run's train folder:
  metrics.jsonl       one JSON object per optimizer step (step, loss, lr, grad_norm,
                      tokens_per_s, mfu, elapsed_s, usd), plus {"eval": ...} lines
  checkpoints/        step-NNNNNNNN/state.pt, written atomically, newest K kept: every
                      checkpoint_every steps, every checkpoint_every_s seconds, on
                      SIGINT/SIGTERM (then TrainingInterrupted) and at the end
  model.safetensors   final weights, with model.json (the model config)
  summary.json        what the run did
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fmforge import hardware
from fmforge.config import ModelConfig, Recipe
from fmforge.errors import UserError
from fmforge.eval.during import TaskEval
from fmforge.eval.heldout import iter_docs, score_docs
from fmforge.model.flops import count_params, flops_per_token
from fmforge.model.transformer import Transformer
from fmforge.model.weights import save_model
from fmforge.tokenizer.shards import Shard, open_split
from fmforge.train import checkpoint
from fmforge.train.identity import budget, differences, run_identity, tokens_fingerprint
from fmforge.train.loader import TokenLoader
from fmforge.train.optim import build_optimizer, lr_at, set_lr
from fmforge.train.plan import Plan
from fmforge.train.signals import TrainingInterrupted, stop_on_signals
from fmforge.train.parallelize import (all_reduce_mean, full_state_dicts, load_full_state_dicts, parallelize, setup,
                                       teardown)


class TrainingDiverged(UserError):
    """Too many consecutive steps with a non-finite loss or gradient (the message names the fix)."""

RUN_FILES = ("metrics.jsonl", "summary.json", "model.safetensors")


def _refuse_existing_run(out_dir: Path) -> None:
    """A fresh run never overwrites another one's metrics, checkpoints or weights."""
    found = [n for n in RUN_FILES if (out_dir / n).exists()]
    if checkpoint.complete(out_dir / "checkpoints"):
        found.append("checkpoints/")
    if found:
        raise UserError(f"{out_dir} already holds a training run ({', '.join(found)}): pass --resume to "
                        "continue it, or choose another --out")


def _check_identity(last: Path, state: dict, identity: dict, mcfg: ModelConfig) -> None:
    stored = state.get("identity")
    diffs = differences(stored, identity) if stored is not None else []
    if not diffs and state["model_config"] != mcfg.model_dump(mode="json"):
        diffs = [f"the model's shape (was {state['model_config']})"]
    if diffs:
        raise UserError(f"cannot resume from {last}: the run differs in {'; '.join(diffs)}. Set them back, or "
                        "train into another --out without --resume (only the budget, train.max_steps / "
                        "max_tokens / time_budget_s, may change on a resume)")


def _agree(flags: list[bool], rt) -> list[bool]:
    """With several ranks: true on every rank when true on any (a checkpoint is collective)."""
    if rt.world == 1:
        return flags
    t = all_reduce_mean(torch.tensor([float(f) for f in flags], device=rt.device), rt)
    return [bool(v > 0) for v in t.tolist()]


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    final_loss: float
    params: int
    skipped_steps: int
    mfu: float | None
    tokens_per_s: float
    val: dict | None
    accelerator: str | None = None  # catalog name, or None (CPU / unknown device)
    devices: int = 1
    flops_per_token: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ProgressLine:
    """One live line on a terminal (step, loss, tokens/s, ETA); a line every 10 s in a log."""

    def __init__(self, enabled: bool):
        self.enabled, self.tty, self.last = enabled, sys.stderr.isatty(), 0.0

    def update(self, text: str, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.time()
        if self.tty:
            sys.stderr.write("\r\033[K" + text + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or now - self.last >= 10:
            print(text, file=sys.stderr, flush=True)
            self.last = now


def tensorboard_writer(out_dir: Path):
    """TensorBoard event files in <out>/tensorboard when the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def model_config_for(recipe: Recipe, vocab_size: int) -> ModelConfig:
    m = recipe.model
    return m if m.vocab_size else m.model_copy(update={"vocab_size": vocab_size})


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def train(recipe: Recipe, tokens_dir: Path, out_dir: Path, resume: bool = False, verbose: bool = True) -> TrainResult:
    cfg = recipe.train
    out_dir = Path(out_dir)
    if not resume:
        _refuse_existing_run(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rt = setup(cfg)
    torch.manual_seed(cfg.seed)

    # --- data
    train_shards = open_split(tokens_dir, "train")
    vocab = train_shards[0].vocab_size
    mcfg = model_config_for(recipe, vocab)
    if mcfg.vocab_size < vocab:
        raise UserError(f"model.vocab_size {mcfg.vocab_size} is smaller than the tokenizer's {vocab}: "
                        "raise it or leave it unset")
    seq = mcfg.context_length
    loader = TokenLoader(train_shards, seq, cfg.micro_batch, cfg.seed, rt.rank, rt.world)
    tokens_per_micro = cfg.micro_batch * seq * rt.world
    accum = max(1, round((cfg.global_batch_tokens or tokens_per_micro) / tokens_per_micro))
    tokens_per_step = tokens_per_micro * accum
    try:
        val_shards: list[Shard] = open_split(tokens_dir, "val")
    except FileNotFoundError:
        val_shards = []

    # --- model and optimizer
    with torch.device(rt.device):  # initialise in place: a 1B model inits in ms on a GPU, seconds on a CPU
        model = Transformer(mcfg)
    n_params = count_params(mcfg).total
    model = parallelize(model, rt, cfg.activation_checkpointing)
    opt = build_optimizer(model, cfg, rt.device.type)

    # --- measuring: FLOPs per token and the device's peak, for MFU
    fpt = flops_per_token(mcfg, seq)
    acc = hardware.identify(torch.cuda.get_device_name(rt.device)) if rt.device.type == "cuda" else None
    peak = acc.bf16_tflops * 1e12 * rt.world if acc else None
    price = cfg.price_per_gpu_hour or (acc.usd_per_hour if acc else 0.0)
    log = ProgressLine(verbose and rt.is_main)
    if verbose and rt.is_main:
        print(f"model: {n_params / 1e6:.2f}M params, {mcfg.n_layers} layers, d={mcfg.d_model}, "
              f"heads={mcfg.n_heads}/{mcfg.kv_heads}, ctx={seq}, vocab={mcfg.vocab_size}", file=sys.stderr)
        print(f"batch: {tokens_per_step:,} tokens/step ({cfg.micro_batch}×{seq}×{rt.world} devices×{accum} accum); "
              f"device {rt.device}{' (' + acc.name + ')' if acc else ''}, "
              f"{'bf16 autocast' if rt.autocast_dtype else 'fp32'}, compile {'on' if rt.compile else 'off'}",
              file=sys.stderr)
        peak_text = f"{acc.bf16_tflops:.0f} TFLOP/s × {rt.world}" if acc else "unknown peak (no MFU on this device)"
        print(f"MFU = tokens/s × (6·N + 12·L·d·T) / peak = tokens/s × {fpt:.4g} / {peak_text}", file=sys.stderr)

    # --- resume
    ckpt_dir = out_dir / "checkpoints"
    step, tokens_seen, elapsed, skipped = 0, 0, 0.0, 0
    metrics_path = out_dir / "metrics.jsonl"
    identity = run_identity(recipe, tokens_fingerprint(tokens_dir))
    last = checkpoint.latest(ckpt_dir) if resume else None
    measured = None
    if last is not None:
        state = checkpoint.load(last)
        _check_identity(last, state, identity, mcfg)
        measured = state.get("plan")
        load_full_state_dicts(model, opt, state["model"], state["optimizer"], rt)
        loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"]["torch"])
        if rt.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], rt.device)
        step, tokens_seen, elapsed, skipped = state["step"], state["tokens"], state["elapsed"], state["skipped"]
        if rt.is_main:
            _truncate_metrics(metrics_path, step)
        if verbose and rt.is_main:
            print(f"resumed from {last} (step {step}, {tokens_seen:,} tokens)", file=sys.stderr)
    elif rt.is_main and metrics_path.exists():  # --resume with no checkpoint yet: a fresh start
        metrics_path.unlink()
    plan = Plan(cfg, tokens_per_step, step, rt.compile, measured)
    if last is not None and (plan.horizon() or step) < step:
        raise UserError(f"cannot resume from {last}: it is at step {step}, past this recipe's budget of "
                        f"{plan.horizon()} steps; raise train.max_steps / max_tokens / time_budget_s")
    fake_dt = float(os.environ.get("FMFORGE_STEP_SECONDS", 0))  # tests: a clock on which each step takes this
    last_save = time.monotonic()

    def save_checkpoint() -> Path | None:
        nonlocal last_save
        last_save = time.monotonic()
        model_sd, opt_sd = full_state_dicts(model, opt, rt)  # a collective with several ranks
        if not rt.is_main:
            return None
        state = {
            "model": model_sd, "optimizer": opt_sd, "loader": loader.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(rt.device) if rt.device.type == "cuda" else None},
            "step": step, "tokens": tokens_seen, "elapsed": elapsed, "skipped": skipped,
            "recipe": recipe.model_dump(mode="json"), "model_config": mcfg.model_dump(mode="json"),
            "tokens_dir": str(tokens_dir), "identity": identity, "budget": budget(recipe), "plan": plan.measured,
        }
        return checkpoint.save(ckpt_dir, step, state, cfg.keep_checkpoints)

    def done() -> bool:
        return plan.done(step, tokens_seen, elapsed)

    def evaluate() -> dict:
        model.eval()
        bytes_cap = int(cfg.eval_tokens * 4)  # ~4 bytes/token: a cap in bytes, exact bpb on whole documents
        res = score_docs(model, iter_docs(val_shards, max_bytes=bytes_cap), seq, rt.device,
                         batch_size=cfg.micro_batch, autocast=rt.autocast())
        model.train()
        return {"step": step, **res.to_dict()}

    # --- the loop
    task_eval = TaskEval.for_training(recipe, tokens_dir, rt.world)  # eval.every_steps: downstream tasks
    tb = tensorboard_writer(out_dir) if rt.is_main else None
    model.train()
    bad_in_row, loss_val, val = 0, float("nan"), None
    mfu_seen: list[float] = []
    with stop_on_signals() as stop, open(metrics_path, "a") as metrics:
        while not done():
            stop_now, save_now = _agree(
                [stop.signum != 0, bool(cfg.checkpoint_every_s) and time.monotonic() - last_save >= cfg.checkpoint_every_s],
                rt)
            if stop_now:
                saved = save_checkpoint()
                if tb is not None:
                    tb.close()
                err = TrainingInterrupted(stop.signum or signal.SIGTERM, saved)
                if rt.is_main:
                    print(f"\nstep {step}: {err}", file=sys.stderr, flush=True)
                raise err
            if save_now and step:
                save_checkpoint()
            t0 = time.perf_counter()
            lr = lr_at(step, plan.horizon(), cfg)
            set_lr(opt, lr)
            total = torch.zeros((), device=rt.device)
            for _ in range(accum):
                x, y = loader.next_batch()
                x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
                with rt.autocast():
                    loss = model(x, y)
                (loss / accum).backward()
                total += loss.detach() / accum
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
            loss_val = float(all_reduce_mean(total, rt))
            if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
                grad_norm = grad_norm.full_tensor()
            gn = float(grad_norm)
            if not (math.isfinite(loss_val) and math.isfinite(gn)):
                opt.zero_grad(set_to_none=True)
                skipped += 1
                bad_in_row += 1
                if rt.is_main:
                    print(f"\nstep {step + 1}: non-finite loss/grad ({loss_val}, {gn}); step skipped "
                          f"({bad_in_row} in a row)", file=sys.stderr)
                if bad_in_row >= cfg.max_bad_steps:
                    raise TrainingDiverged(
                        f"{bad_in_row} consecutive steps had a non-finite loss or gradient; stopped at step "
                        f"{step}. The last good checkpoint ({checkpoint.latest(ckpt_dir) or 'none'}) is intact. "
                        "Lower train.lr or raise train.warmup_steps."
                    )
                tokens_seen += tokens_per_step  # the data was consumed; the loader moved on
                continue
            bad_in_row = 0
            opt.step()
            opt.zero_grad(set_to_none=True)
            if rt.device.type == "cuda":
                torch.cuda.synchronize(rt.device)
            dt = fake_dt or time.perf_counter() - t0
            step += 1
            tokens_seen += tokens_per_step
            elapsed += dt
            if plan.measured is None:
                plan.observe(step, elapsed)
                if plan.measured is not None and verbose and rt.is_main:
                    print(f"\ntime budget {cfg.time_budget_s:g} s at {plan.measured['sec_per_step']:.3g} s/step "
                          f"(measured): {plan.horizon()} steps planned", file=sys.stderr)
            tps = tokens_per_step / dt
            mfu = tps * fpt / peak if peak else None
            if mfu is not None and step > 3:
                mfu_seen.append(mfu)
            if rt.is_main:
                rec = {"step": step, "loss": loss_val, "lr": lr, "grad_norm": gn, "tokens": tokens_seen,
                       "tokens_per_s": tps, "mfu": mfu, "elapsed_s": elapsed, "epoch": loader.epoch,
                       "usd": elapsed / 3600 * price * rt.world}
                if step % cfg.log_every == 0 or done():
                    metrics.write(json.dumps(rec) + "\n")
                    metrics.flush()
                    if tb is not None:
                        for k in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu"):
                            if rec[k] is not None:
                                tb.add_scalar(f"train/{k}", rec[k], step)
                p = plan.progress(step, tokens_seen, elapsed)
                eta = elapsed / p - elapsed if p > 0 else 0
                log.update(f"step {step} | loss {loss_val:.4f} | lr {lr:.2e} | {tps:,.0f} tok/s"
                           + (f" | MFU {mfu:.1%}" if mfu else "") + f" | {p:.0%} | ETA {_fmt_time(eta)}")
            if cfg.eval_every and step % cfg.eval_every == 0 and val_shards:
                val = evaluate()
                if rt.is_main:
                    metrics.write(json.dumps({"eval": val}) + "\n")
                    if tb is not None:
                        tb.add_scalar("val/loss", val["val_loss"], step)
                        tb.add_scalar("val/bpb", val["val_bpb"], step)
            if task_eval is not None and task_eval.due(step) and rt.is_main:
                metrics.write(json.dumps({"eval": task_eval(model, step, rt.autocast())}) + "\n")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save_checkpoint()
    if tb is not None:
        tb.close()
    log.update(f"done: {step} steps, {tokens_seen:,} tokens in {_fmt_time(elapsed)}, final loss {loss_val:.4f}", final=True)
    save_checkpoint()
    if cfg.eval_every and val_shards and (val is None or val["step"] != step):
        val = evaluate()
    final_sd, _ = full_state_dicts(model, opt, rt)
    if rt.is_main:
        save_model(final_sd, mcfg, out_dir)
    mfu_med = sorted(mfu_seen)[len(mfu_seen) // 2] if mfu_seen else None
    result = TrainResult(step, tokens_seen, elapsed, loss_val, n_params, skipped, mfu_med,
                         tokens_seen / elapsed if elapsed else 0.0, val, acc.name if acc else None, rt.world, fpt)
    if rt.is_main:
        (out_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
    teardown(rt)
    return result


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the checkpoint we resume from, so the file reads as one run."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        s = rec.get("step", rec.get("eval", {}).get("step", 0))
        if s <= step:
            keep.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)
