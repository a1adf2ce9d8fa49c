"""Checkpoints inside a fine-tuning run, and resuming from them (`fmforge finetune --resume`).

OUT/checkpoints/step-NNNNNNNN/
  adapter_model.safetensors,   lora / prompt-tuning: the adapter's weights only, in PEFT's format
  adapter_config.json          (so any checkpoint also loads as an adapter)
  model.safetensors            full: every weight
  optimizer.pt                 AdamW's state (torch.save of its state_dict)
  trainer_state.pt             step, micro-batches consumed, counters, RNG states, the run's identity
  COMPLETE                     written last
The learning rate is a function of the step and the planned steps (fmforge.train.optim.lr_at),
so the step is the whole of the schedule's state. As pretraining's checkpoints
(fmforge.train.checkpoint): written into `.tmp-step-N`, fsynced, renamed; only a folder holding
COMPLETE counts, so a save killed half-way is never resumed from (and its `.tmp-*` is removed
by the next save); the newest `finetune.keep_checkpoints` are kept.

A run's identity is its finetune settings apart from the budget and the neutral fields
(declared on FinetuneConfig), a fingerprint of the base model's weights and one of the
training rows (the tokenized, split and packed examples the batches are drawn from). A resume
under another identity is refused, naming what differs.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from array import array
from pathlib import Path

import torch

from fmforge.config import FinetuneConfig
from fmforge.errors import UserError
from fmforge.train.checkpoint import MARKER, complete, fsync_path, latest, write_synced

STATE = "trainer_state.pt"
OPTIMIZER = "optimizer.pt"
FULL_WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
RUN_FILES = ("metrics.jsonl", "finetune_report.json")  # what a fresh run would overwrite


# ------------------------------------------------------------------ identity

def weights_fingerprint(model: torch.nn.Module) -> str:
    """Each tensor's name, shape, dtype and its first and last 256 values: another base
    model (or another checkpoint of it) differs there; hashing every weight of a 7B model
    on each start would cost more than it tells."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        flat = t.detach().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:".encode())
        for part in (flat[:256], flat[-256:]):
            h.update(part.float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def rows_fingerprint(rows) -> str:
    """The training rows exactly (tokens, targets, positions): another file, tokenizer,
    split or packing changes it."""
    h = hashlib.sha256()
    for e in rows:
        for seq in (e.input_ids, e.targets(), e.position_ids or []):
            h.update(array("q", seq).tobytes())
            h.update(b"|")
    return h.hexdigest()[:16]


def run_identity(cfg: FinetuneConfig, base_model: torch.nn.Module, rows) -> dict:
    settings = cfg.model_dump(mode="json")
    for name in FinetuneConfig.BUDGET_FIELDS + FinetuneConfig.NEUTRAL_FIELDS:
        settings.pop(name)
    return {"finetune": settings, "base_model": weights_fingerprint(base_model), "train_data": rows_fingerprint(rows)}


def differences(stored: dict, current: dict) -> list[str]:
    from fmforge.train.identity import differences as field_differences

    out = field_differences(stored["finetune"], current["finetune"], "finetune.")
    if stored["base_model"] != current["base_model"]:
        out.append("the base model's weights (another --model)")
    if stored["train_data"] != current["train_data"]:
        out.append("the training rows (another --data / --eval-data file, its content, or the tokenizer)")
    return out


# ------------------------------------------------------------------ the checkpointer

def refuse_existing_run(out: Path) -> None:
    """A fresh run never overwrites another one's metrics, report or checkpoints (as `fmforge train`)."""
    found = [n for n in RUN_FILES if (Path(out) / n).exists()]
    if latest(Path(out) / "checkpoints"):
        found.append("checkpoints/")
    if found:
        raise UserError(f"{out} already holds a fine-tuning run ({', '.join(found)}): pass --resume to continue "
                        "it, or choose another --out")


class Checkpoints:
    """OUT/checkpoints/ of one run: what to resume from (its identity checked at once),
    saving, restoring."""

    def __init__(self, out: Path, cfg: FinetuneConfig, identity: dict, resume: bool):
        self.dir, self.cfg, self.identity = Path(out) / "checkpoints", cfg, identity
        self.resume_from = latest(self.dir) if resume else None
        self.state: dict | None = None
        self.base: dict | None = None  # the base model's held-out results, kept in every checkpoint
        if self.resume_from is not None:
            self.state = torch.load(self.resume_from / STATE, map_location="cpu", weights_only=True)
            diffs = differences(self.state["identity"], identity)
            if diffs:
                raise UserError(f"cannot resume from {self.resume_from}: the run differs in {'; '.join(diffs)}. Set "
                                "them back, or fine-tune into another --out without --resume (only the budget, "
                                "finetune.max_steps / epochs, may change on a resume)")

    @property
    def step(self) -> int:
        return self.state["step"] if self.state else 0

    @property
    def saved_base(self) -> dict | None:
        """The base model's held-out results saved with the checkpoint resumed from: the same
        identity scores the same, so a resume need not evaluate the base again."""
        return (self.state or {}).get("base")

    def save(self, model, opt: torch.optim.Optimizer, progress: dict, device: torch.device) -> Path:
        """Write step-NNNNNNNN atomically; `progress` holds step, micro_batches and counters."""
        step = progress["step"]
        final, tmp = self.dir / f"step-{step:08d}", self.dir / f".tmp-step-{step:08d}"
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".tmp-*"):  # a save killed half-way
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
        if self.cfg.method == "full":
            from safetensors.torch import save_model

            save_model(model, str(tmp / FULL_WEIGHTS))  # handles tied weights (one copy)
        else:
            model.save_pretrained(str(tmp))  # PEFT: the adapter only
        write_synced(tmp / OPTIMIZER, lambda f: torch.save(opt.state_dict(), f))
        rng = {"torch": torch.get_rng_state(),  # LoRA dropout draws from them
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        write_synced(tmp / STATE, lambda f: torch.save({**progress, "rng": rng, "identity": self.identity,
                                                        "method": self.cfg.method, "base": self.base}, f))
        for f in tmp.iterdir():  # PEFT and safetensors do not fsync what they write
            fsync_path(f)
        fsync_path(tmp)
        if os.environ.get("FMFORGE_FAULT") == f"kill-in-save:{step}":  # tests: die before the marker
            os.kill(os.getpid(), 9)
        write_synced(tmp / MARKER, lambda f: f.write(b"ok\n"))
        fsync_path(tmp)
        if final.exists():  # an incomplete folder of that name (complete ones are never rewritten)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_path(self.dir)
        for old in complete(self.dir)[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def restore(self, model, opt: torch.optim.Optimizer, device: torch.device) -> dict:
        """Load the checkpoint opened for resuming into model and optimizer, set the RNG
        states; return its progress (step, micro_batches, counters)."""
        path = self.resume_from
        if self.cfg.method == "full":
            from safetensors.torch import load_model

            load_model(model, str(path / FULL_WEIGHTS), strict=True, device=str(device))
        else:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            got = set_peft_model_state_dict(model, load_file(str(path / ADAPTER_WEIGHTS), device=str(device)))
            # prompt tuning's embedding is copied in directly; the report below covers LoRA's modules
            missing = [k for k in got.missing_keys if model.active_adapter in k]
            if not model.peft_config[model.active_adapter].is_prompt_learning and (missing or got.unexpected_keys):
                raise UserError(f"{path}: the adapter does not fit the model (missing {missing[:3]}, unexpected "
                                f"{got.unexpected_keys[:3]})")
        opt.load_state_dict(torch.load(path / OPTIMIZER, map_location=device, weights_only=True))
        torch.set_rng_state(self.state["rng"]["torch"])
        if self.state["rng"]["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(self.state["rng"]["cuda"], device)
        return self.state
