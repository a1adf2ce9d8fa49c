"""Pretraining, as a narrative: build, (resume), loop over steps, checkpoint, finish.

Outputs in the run's train folder:
  metrics.jsonl       one JSON object per optimizer step (step, loss, lr, grad_norm,
                      tokens_per_s, mfu, elapsed_s, usd), plus {"eval": ...} lines
  checkpoints/        step-NNNNNNNN/ (sharded, torch.distributed.checkpoint; checkpoint.py), newest K kept: every
                      checkpoint_every steps, every checkpoint_every_s seconds, on
                      SIGINT/SIGTERM (then TrainingInterrupted) and at the end
  model.safetensors   final weights, with model.json (the model config)
  summary.json        what the run did
"""
from __future__ import annotations

import json
import os
import signal
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
from fmforge.outputs import atomic_write_text
from fmforge.tokenizer.shards import Shard, open_split
from fmforge.train import checkpoint
from fmforge.train.identity import budget, differences, run_identity, tokens_fingerprint
from fmforge.train.loader import TokenLoader
from fmforge.train.metrics import Metrics, fmt_time
from fmforge.train.optim import build_optimizer, lr_at, set_lr
from fmforge.train.parallelize import (all_reduce_mean, choose_strategy, full_state_dicts, parallelize, setup,
                                       teardown, unwrap)
from fmforge.train.plan import Plan
from fmforge.train.signals import TrainingInterrupted, stop_on_signals
from fmforge.train.state import RunState
from fmforge.train.step import TrainStep, accumulation


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


def _inject_fault(rt, step: int) -> None:
    """Tests: FMFORGE_FAULT=kill-rank:R:S (SIGKILL) or crash-rank:R:S (an exception) makes
    rank R fail before step S+1, to prove the job then ends rather than hangs."""
    kind, _, where = os.environ.get("FMFORGE_FAULT", "").partition(":")
    if kind not in ("kill-rank", "crash-rank"):
        return
    rank, at = (int(v) for v in where.split(":"))
    if rank == rt.rank and step == at:
        if kind == "kill-rank":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure on rank {rank} at step {step} (FMFORGE_FAULT)")


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


def model_config_for(recipe: Recipe, vocab_size: int) -> ModelConfig:
    m = recipe.model
    return m if m.vocab_size else m.model_copy(update={"vocab_size": vocab_size})


class Trainer:
    """The parts of a run: runtime and data, model and optimizer (`build`), run state and
    resume, one step (`TrainStep`), the checkpointer (`checkpoint`), metrics (`Metrics`)."""

    def __init__(self, recipe: Recipe, tokens_dir: Path, out_dir: Path, resume: bool, verbose: bool):
        self.recipe, self.cfg, self.verbose = recipe, recipe.train, verbose
        self.tokens_dir, self.out_dir = Path(tokens_dir), Path(out_dir)
        if not resume:
            _refuse_existing_run(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.rt = setup(self.cfg)
        torch.manual_seed(self.cfg.seed)
        self._data()
        self._build()
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.identity = run_identity(recipe, tokens_fingerprint(self.tokens_dir))
        last = checkpoint.latest(self.ckpt_dir) if resume else None
        self.state, measured = RunState(), None
        if last is not None:
            measured = self._restore(last)
        self.metrics = Metrics(self.out_dir, self.rt.is_main, verbose, self.state.step if last else None)
        self._describe()
        if last is not None:
            self.metrics.say(f"resumed from {last} (step {self.state.step}, {self.state.tokens:,} tokens)")
        self.plan = Plan(self.cfg, self.tokens_per_step, self.state.step, self.rt.compile, measured)
        if last is not None and (self.plan.horizon() or self.state.step) < self.state.step:
            raise UserError(f"cannot resume from {last}: it is at step {self.state.step}, past this recipe's "
                            f"budget of {self.plan.horizon()} steps; raise train.max_steps / max_tokens / time_budget_s")
        self.step_fn = TrainStep(self.model, self.opt, self.rt, self.accum, self.cfg.grad_clip)
        self.last_save = time.monotonic()

    # ------------------------------------------------------------------ building
    def _data(self) -> None:
        cfg, rt = self.cfg, self.rt
        self.train_shards = open_split(self.tokens_dir, "train")
        vocab = self.train_shards[0].vocab_size
        self.mcfg = model_config_for(self.recipe, vocab)
        if self.mcfg.vocab_size < vocab:
            raise UserError(f"model.vocab_size {self.mcfg.vocab_size} is smaller than the tokenizer's {vocab}: "
                            "raise it or leave it unset")
        self.seq = self.mcfg.context_length
        self.loader = TokenLoader(self.train_shards, self.seq, cfg.micro_batch, cfg.seed, rt.rank, rt.world)
        self.accum = accumulation(cfg.global_batch_tokens, cfg.micro_batch, self.seq, rt.world)
        self.tokens_per_step = cfg.micro_batch * self.seq * rt.world * self.accum
        try:
            self.val_shards: list[Shard] = open_split(self.tokens_dir, "val")
        except FileNotFoundError:
            self.val_shards = []

    def _build(self) -> None:
        rt, cfg = self.rt, self.cfg
        with torch.device(rt.device):  # initialise in place: a 1B model inits in ms on a GPU, seconds on a CPU
            model = Transformer(self.mcfg)
        self.n_params = count_params(self.mcfg).total
        rt.strategy, self.why = choose_strategy(cfg, self.n_params, rt.world)
        self.model = parallelize(model, rt, cfg.activation_checkpointing, cfg.loss_chunk_tokens)
        self.opt = build_optimizer(self.model, cfg, rt.device.type)
        # measuring: FLOPs per token and the device's peak, for MFU
        self.fpt = flops_per_token(self.mcfg, self.seq)
        self.acc = hardware.identify(torch.cuda.get_device_name(rt.device)) if rt.device.type == "cuda" else None
        self.peak = self.acc.bf16_tflops * 1e12 * rt.world if self.acc else None
        self.price = cfg.price_per_gpu_hour or (self.acc.usd_per_hour if self.acc else 0.0)

    def _describe(self) -> None:
        rt, cfg, m, acc = self.rt, self.cfg, self.mcfg, self.acc
        say = self.metrics.say
        say(f"model: {self.n_params / 1e6:.2f}M params, {m.n_layers} layers, d={m.d_model}, "
            f"heads={m.n_heads}/{m.kv_heads}, ctx={self.seq}, vocab={m.vocab_size}")
        say(f"parallel: {rt.strategy} on {rt.world} rank{'s' if rt.world > 1 else ''} ({self.why})")
        say(f"batch: {self.tokens_per_step:,} tokens/step ({cfg.micro_batch}×{self.seq}×{rt.world} devices×"
            f"{self.accum} accum); device {rt.device}{' (' + acc.name + ')' if acc else ''}, "
            f"{'bf16 autocast' if rt.autocast_dtype else 'fp32'}, compile {'on' if rt.compile else 'off'}"
            f"{f', loss head in chunks of {cfg.loss_chunk_tokens:,} tokens' if cfg.loss_chunk_tokens else ''}")
        peak_text = f"{acc.bf16_tflops:.0f} TFLOP/s × {rt.world}" if acc else "unknown peak (no MFU on this device)"
        say(f"MFU = tokens/s × (6·N + 12·L·d·T) / peak = tokens/s × {self.fpt:.4g} / {peak_text}")

    # ------------------------------------------------------------------ checkpointer
    def _restore(self, last: Path) -> dict | None:
        state = checkpoint.load(last)
        _check_identity(last, state, self.identity, self.mcfg)
        checkpoint.restore(last, self.model, self.opt)
        self.loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.rt.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.rt.device)
        self.state = RunState.from_checkpoint(state)
        return state.get("plan")

    def save_checkpoint(self) -> Path:
        """A collective: every rank writes its shard."""
        self.last_save = time.monotonic()
        rt = self.rt
        train_state = {
            **self.state.to_dict(), "loader": self.loader.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(rt.device) if rt.device.type == "cuda" else None},
            "recipe": self.recipe.model_dump(mode="json"), "model_config": self.mcfg.model_dump(mode="json"),
            "tokens_dir": str(self.tokens_dir), "identity": self.identity, "budget": budget(self.recipe),
            "plan": self.plan.measured, "world": rt.world, "strategy": rt.strategy,
        }
        return checkpoint.save(self.ckpt_dir, self.state.step, self.model, self.opt, train_state,
                               self.cfg.keep_checkpoints)

    # ------------------------------------------------------------------ the loop
    def done(self) -> bool:
        s = self.state
        return self.plan.done(s.step, s.tokens, s.elapsed)

    def evaluate(self) -> dict:
        model = unwrap(self.model)  # DDP: the local replica, no gradients to sync
        model.eval()
        bytes_cap = int(self.cfg.eval_tokens * 4)  # ~4 bytes/token: a cap in bytes, exact bpb on whole documents
        res = score_docs(model, iter_docs(self.val_shards, max_bytes=bytes_cap), self.seq, self.rt.device,
                         batch_size=self.cfg.micro_batch, autocast=self.rt.autocast())
        model.train()
        return {"step": self.state.step, **res.to_dict()}

    def _may_run_ahead(self) -> bool:
        """Whether the next step may be queued before the pending one is read: with one process
        and a device-side skip, when nothing that happens after a step (the end of the budget, a
        checkpoint, an eval) would follow the pending one, whether it is applied or skipped.
        Then the host's work between steps (this bookkeeping, the next batch) overlaps the GPU."""
        cfg, n = self.cfg, self.state.step + 1  # the pending step's number, if it is applied
        if self.rt.world > 1 or not self.step_fn.skip_on_device or self.fake_dt:
            return False
        if cfg.time_budget_s and self.plan.measured is None:  # the time plan needs each step's time
            return False
        # tokens: the pending step's are counted; its time is not known yet, so it is assumed
        # to take the planned time (the budget is a hard limit: no step is queued past it)
        ahead = self.plan.measured["sec_per_step"] if self.plan.measured else 0.0
        if self.plan.done(n, self.state.tokens, self.state.elapsed + ahead):
            return False
        for every in (cfg.checkpoint_every, cfg.eval_every if self.val_shards else 0):
            if every and n % every == 0:
                return False
        return not (self.task_eval is not None and self.task_eval.due(n))

    def _launch(self, step: int) -> tuple:
        """Queue step number `step` (0-based): its learning rate, batch and optimizer update."""
        t0 = time.perf_counter()
        lr = lr_at(step, self.plan.horizon(), self.cfg)
        set_lr(self.opt, lr)
        pending = self.step_fn.launch(self.loader.next_batch)
        self.state.tokens += self.tokens_per_step  # also for a skipped step: the data was consumed
        return pending, lr, t0, self.state.tokens, self.loader.epoch

    def _finish(self, launched: tuple) -> None:
        """Read a launched step back and account for it: skip count, clock, metrics, progress,
        evals and checkpoints due after it."""
        cfg, rt, s, metrics = self.cfg, self.rt, self.state, self.metrics
        pending, lr, t0, tokens, epoch = launched
        r = pending.result()
        now = time.perf_counter()
        # the host's lap: from this step's launch, or from the previous read when it was queued
        # behind the previous step; summed, the wall time of the steps
        dt = self.fake_dt or now - max(t0, self.lap or t0)
        self.lap = now
        if rt.world > 1:  # one clock for all ranks: each rank's own would plan its own step count, and hang
            dt = all_reduce_mean(torch.tensor([dt], dtype=torch.float64, device=rt.device), rt).item()
        if not r.finite:
            s.skipped += 1
            self.bad_in_row += 1
            metrics.warn(f"\nstep {s.step + 1}: non-finite loss/grad ({r.loss}, {r.grad_norm}); step skipped "
                         f"({self.bad_in_row} in a row)")
            if self.bad_in_row >= cfg.max_bad_steps:
                raise TrainingDiverged(
                    f"{self.bad_in_row} consecutive steps had a non-finite loss or gradient; stopped at step "
                    f"{s.step}. The last good checkpoint ({checkpoint.latest(self.ckpt_dir) or 'none'}) is "
                    "intact. Lower train.lr or raise train.warmup_steps.")
            return
        self.bad_in_row, self.loss_val = 0, r.loss
        s.step += 1
        s.elapsed += dt
        if self.plan.observe(s.step, s.elapsed):
            metrics.say("\n" + self.plan.describe())
        tps = self.tokens_per_step / dt
        mfu = tps * self.fpt / self.peak if self.peak else None
        if mfu is not None and s.step > 3:
            self.mfu_seen.append(mfu)
        rec = {"step": s.step, "loss": r.loss, "lr": lr, "grad_norm": r.grad_norm, "tokens": tokens,
               "tokens_per_s": tps, "tokens_per_s_per_device": tps / rt.world, "world": rt.world,
               "mfu": mfu, "elapsed_s": s.elapsed, "epoch": epoch,
               "usd": s.elapsed / 3600 * self.price * rt.world}
        metrics.step(rec, write=s.step % cfg.log_every == 0 or self.done())
        p = self.plan.progress(s.step, tokens, s.elapsed)
        eta = s.elapsed / p - s.elapsed if p > 0 else 0
        speed = (f"{tps:,.0f} tok/s" if rt.world == 1 else
                 f"{rt.world} ranks × {tps / rt.world:,.0f} tok/s/device")
        metrics.progress(f"step {s.step} | loss {r.loss:.4f} | lr {lr:.2e} | {speed}"
                         + (f" | MFU {mfu:.1%}" if mfu else "") + f" | {p:.0%} | ETA {fmt_time(eta)}")
        if cfg.eval_every and s.step % cfg.eval_every == 0 and self.val_shards:
            self.val = self.evaluate()
            metrics.eval(self.val)
        if self.task_eval is not None and self.task_eval.due(s.step) and rt.is_main:
            metrics.eval(self.task_eval(self.model, s.step, rt.autocast()))
        if cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0:
            self.save_checkpoint()

    def run(self) -> TrainResult:
        cfg, rt, s, metrics = self.cfg, self.rt, self.state, self.metrics
        # tests: a clock on which each step takes this long (a comma-separated list: rank r's is item r)
        fake = os.environ.get("FMFORGE_STEP_SECONDS", "0").split(",")
        self.fake_dt = float(fake[min(rt.rank, len(fake) - 1)])
        self.task_eval = TaskEval.for_training(self.recipe, self.tokens_dir, rt.world)  # eval.every_steps: tasks
        self.model.train()
        self.bad_in_row, self.loss_val, self.val, self.lap = 0, float("nan"), None, None
        self.mfu_seen: list[float] = []
        pending = None  # a launched step whose loss and norm are not read yet
        with stop_on_signals() as stop:
            while True:
                if pending is not None and not self._may_run_ahead():
                    self._finish(pending)
                    pending = None
                if pending is None and self.done():
                    break
                stop_now, save_now = _agree(
                    [stop.signum != 0,
                     bool(cfg.checkpoint_every_s) and time.monotonic() - self.last_save >= cfg.checkpoint_every_s], rt)
                if pending is not None and (stop_now or save_now):  # the state saved must match the weights
                    self._finish(pending)
                    pending = None
                if stop_now:
                    saved = self.save_checkpoint()
                    metrics.close()
                    err = TrainingInterrupted(stop.signum or signal.SIGTERM, saved)
                    metrics.warn(f"\nstep {s.step}: {err}")
                    raise err
                if save_now and s.step:
                    self.save_checkpoint()
                if self.done():  # reading the pending step may have ended the run
                    break
                _inject_fault(rt, s.step)
                launched = self._launch(s.step + (pending is not None))
                if pending is not None:  # read the previous step while this one runs on the device
                    self._finish(pending)
                pending = launched
        h = self.plan.horizon()
        if cfg.time_budget_s and h and s.step < h:  # the hard limit ended it before the plan did
            metrics.warn(f"\nstep {s.step}: the time budget ({cfg.time_budget_s:g} s) ran out {h - s.step} steps "
                         "before the plan's end: steps got slower after the plan was fixed; the learning "
                         "rate had not finished its decay")
        loss_val, val, mfu_seen = self.loss_val, self.val, self.mfu_seen
        metrics.progress(f"done: {s.step} steps, {s.tokens:,} tokens in {fmt_time(s.elapsed)}, "
                         f"final loss {loss_val:.4f}", final=True)
        self.save_checkpoint()
        if cfg.eval_every and self.val_shards and (val is None or val["step"] != s.step):
            val = self.evaluate()
        metrics.close()
        final_sd, _ = full_state_dicts(self.model, None, rt)  # the consolidated single-file export
        if rt.is_main:
            save_model(final_sd, self.mcfg, self.out_dir)
        mfu_med = sorted(mfu_seen)[len(mfu_seen) // 2] if mfu_seen else None
        acc = self.acc
        result = TrainResult(s.step, s.tokens, s.elapsed, loss_val, self.n_params, s.skipped, mfu_med,
                             s.tokens / s.elapsed if s.elapsed else 0.0, val, acc.name if acc else None, rt.world,
                             self.fpt)
        if rt.is_main:
            atomic_write_text(self.out_dir / "summary.json", json.dumps(result.to_dict(), indent=2))
        return result


def train(recipe: Recipe, tokens_dir: Path, out_dir: Path, resume: bool = False, verbose: bool = True) -> TrainResult:
    run = _train
    if "TORCHELASTIC_ERROR_FILE" in os.environ:  # under torchrun: its failure summary shows this rank's traceback
        from torch.distributed.elastic.multiprocessing.errors import record

        run = record(_train)
    return run(recipe, tokens_dir, out_dir, resume, verbose)


def _train(recipe, tokens_dir, out_dir, resume, verbose) -> TrainResult:
    trainer = None
    try:
        trainer = Trainer(recipe, tokens_dir, out_dir, resume, verbose)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.metrics.close()
            teardown(trainer.rt)
