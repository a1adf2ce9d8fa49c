"""`fmforge finetune`, end to end: base + data -> held-out loss before -> train -> after ->
adapter (PEFT format) / merged or full HF model -> finetune_report.json and .md.

OUT/
  finetune_report.json  base_eval_loss, tuned_eval_loss, trainable params, tokens/s, memory, cost, samples
  finetune_report.md    the same, side by side
  metrics.jsonl         one line per optimizer step (as pretraining's)
  adapter/              lora / prompt-tuning: PEFT's format (PeftModel.from_pretrained loads it) + tokenizer
  merged/               lora with merge: the adapter folded into the base, an HF model folder
  model/                full: the fine-tuned HF model folder
  checkpoints/          step-NNNNNNNN/: the trained weights, optimizer and data position
                        (fmforge.finetune.checkpoint); `resume` continues from the newest
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from fmforge import hardware
from fmforge.config import FinetuneConfig
from fmforge.finetune.checkpoint import Checkpoints, refuse_existing_run, rows_fingerprint, run_identity

# finetune fields the base model's held-out results depend on (neutral to a run's identity)
BASE_EVAL_FIELDS = ("eval_task", "eval_task_examples", "sample_prompts", "max_new_tokens", "temperature")
from fmforge.finetune.data import (IGNORE, Dataset, Example, FinetuneDataError, bos_id, check_bad, load_jsonl,
                                   pack, split_heldout)
from fmforge.finetune.loop import evaluate_loss, runtime, say, train_loop
from fmforge.finetune.model import apply_method, load_base, parameter_counts, quiet_libraries, within_context
from fmforge.finetune.report import report_markdown
from fmforge.outputs import atomic_write_text


def _replace_dir(out: Path, name: str, write) -> str:
    """Write folder out/name through a temporary sibling, then swap it in (a reader never sees
    half a model). An earlier out/name is ours: the caller claimed `out` for fmforge finetune."""
    tmp = out / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if (out / name).exists():
        shutil.rmtree(out / name)
    os.replace(tmp, out / name)
    return name


def _check_packing() -> None:
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        raise FinetuneDataError("finetune.packing needs transformers >= 4.53 (packed sequences kept apart by "
                                "position_ids); upgrade it or set packing false") from None


@torch.no_grad()
def _complete(model, tok, ex: Example, cfg: FinetuneConfig, rt) -> str:
    first = next(i for i, lab in enumerate(ex.labels) if lab != IGNORE)
    ids = torch.tensor([ex.input_ids[:first]], device=rt.device)
    torch.manual_seed(cfg.seed)
    with rt.autocast():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=cfg.max_new_tokens,
                             do_sample=cfg.temperature > 0, temperature=cfg.temperature or None,
                             top_k=40 if cfg.temperature > 0 else None, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)


@torch.no_grad()
def task_metric(model, tok, held: list[Example], cfg: FinetuneConfig, rt) -> dict | None:
    """finetune.eval_task on the first eval_task_examples held-out examples."""
    if cfg.eval_task is None:
        return None
    hits, n = 0, 0
    for ex in held[: cfg.eval_task_examples]:
        first = next(i for i, lab in enumerate(ex.labels) if lab != IGNORE)
        ids = torch.tensor([ex.input_ids[:first]], device=rt.device)
        with rt.autocast():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=ex.trained_tokens + 4, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        got = tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
        hits += got.strip() == _prompt_text(tok, ex)[1].strip()
        n += 1
    return {"task": cfg.eval_task, "score": hits / max(1, n), "examples": n}


def _prompt_text(tok, ex: Example) -> tuple[str, str]:
    first = next(i for i, lab in enumerate(ex.labels) if lab != IGNORE)
    ref = [t for t in ex.labels if t != IGNORE]
    return (tok.decode(ex.input_ids[:first], skip_special_tokens=True),
            tok.decode(ref, skip_special_tokens=True))


def place(model, cfg: FinetuneConfig, rt) -> None:
    """Frozen weights in bf16 on a GPU (LoRA / prompt tuning); full fine-tuning keeps fp32."""
    if rt.amp is not None and cfg.method != "full":
        model.to(rt.amp)
    model.to(rt.device)


def prepare_model(model, cfg: FinetuneConfig, rt, tok=None, placed: bool = False):
    """The model to train on rt's device: placed, the method applied, trained weights in fp32."""
    if not placed:
        place(model, cfg, rt)
    net = apply_method(model, cfg, tok).to(rt.device)
    for p in net.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return net


def load_data(data: Path, eval_data: Path | None, tok, cfg: FinetuneConfig, bos: int | None, verbose: bool):
    """(train examples, held-out examples, [datasets]) with bad rows reported and checked."""
    sets: list[Dataset] = []
    for path in [data] + ([eval_data] if eval_data else []):
        ds = load_jsonl(path, tok, cfg.max_length, cfg.too_long, bos)
        for b in ds.bad[:5]:
            say(f"[finetune] {path}: line {b.line}: {b.reason}", verbose)
        if len(ds.bad) > 5:
            say(f"[finetune] {path}: ... {len(ds.bad) - 5} more bad rows (listed in finetune_report.json)", verbose)
        check_bad(ds, cfg.max_bad_fraction)
        sets.append(ds)
    if eval_data:
        train, held = sets[0].examples, sets[1].examples
    else:
        train, held = split_heldout(sets[0].examples, cfg.eval_fraction, cfg.split_seed)
    return train, held[: cfg.max_eval_examples], sets


def finetune(model: Path | str, data: Path | str, out: Path | str, cfg: FinetuneConfig,
             eval_data: Path | str | None = None, tokenizer: Path | str | None = None, verbose: bool = True,
             resume: bool = False) -> dict:
    """Fine-tune into `out`. Without `resume`, a folder holding a run is refused; with it, the
    run continues from its newest complete checkpoint (a fresh start when there is none)."""
    quiet_libraries()
    out = Path(out)
    if not resume:
        refuse_existing_run(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rt = runtime(cfg)
    torch.manual_seed(cfg.seed)
    base = load_base(model, tokenizer)
    tok = base.tokenizer
    cfg, note = within_context(cfg, base.model)
    if note:
        say(f"[finetune] {note}", verbose)
    bos = bos_id(tok, base.model.config)
    train_ex, held, sets = load_data(Path(data), Path(eval_data) if eval_data else None, tok, cfg, bos, verbose)
    rows = train_ex
    if cfg.packing:
        _check_packing()
        rows = pack(train_ex, cfg.max_length)
    say(f"[finetune] {base.source} model {base.path.name} ({type(base.model).__name__}); {len(train_ex):,} training "
        f"examples{f' in {len(rows):,} packed rows' if cfg.packing else ''}, {len(held):,} held out; method "
        f"{cfg.method}; device {rt.device}{', bf16 autocast' if rt.amp else ', fp32'}", verbose)
    # before the base eval: a resume under another identity is refused at once
    ckpts = Checkpoints(out, cfg, run_identity(cfg, base.model, rows), resume)
    if ckpts.resume_from is not None:
        say(f"[finetune] resuming from {ckpts.resume_from} (step {ckpts.step})", verbose)

    place(base.model, cfg, rt)
    pad = tok.pad_token_id
    # what the base's results depend on beyond the run's identity (eval settings are neutral to it)
    dump = cfg.model_dump(mode="json")
    base_key = {"held": rows_fingerprint(held), **{k: dump[k] for k in BASE_EVAL_FIELDS}}
    saved = ckpts.saved_base if (ckpts.saved_base or {}).get("key") == base_key else None
    if saved is not None:  # scored before the interruption, with the same held-out set and settings
        before, before_task, samples = (saved[k] for k in ("loss", "task", "samples"))
    else:
        before = evaluate_loss(base.model, held, cfg.micro_batch, rt, pad)
        before_task = task_metric(base.model, tok, held, cfg, rt)
        samples = [{"prompt": _prompt_text(tok, e)[0], "reference": _prompt_text(tok, e)[1],
                    "base": _complete(base.model, tok, e, cfg, rt)} for e in held[: cfg.sample_prompts]]
    ckpts.base = {"key": base_key, "loss": before, "task": before_task, "samples": samples}
    say(f"[finetune] held-out loss of the base: {before['loss']:.4f} nats/token over {before['tokens']:,} "
        f"completion tokens{' (from the checkpoint)' if saved is not None else ''}", verbose)

    net = prepare_model(base.model, cfg, rt, tok, placed=True)
    counts = parameter_counts(net)
    say(f"[finetune] trainable: {counts['trainable_params']:,} of {counts['total_params']:,} parameters "
        f"({counts['trainable_percent']:.3f}%)", verbose)
    if cfg.method != "full":  # checkpoints' adapters, as the final one, name their base
        net.peft_config[net.active_adapter].base_model_name_or_path = str(base.path)
    res = train_loop(net, rows, cfg, rt, pad, out, verbose, checkpoints=ckpts)
    after = evaluate_loss(net, held, cfg.micro_batch, rt, pad)
    say(f"[finetune] held-out loss: base {before['loss']:.4f} -> tuned {after['loss']:.4f}", verbose)
    after_task = task_metric(net, tok, held, cfg, rt)
    for s, e in zip(samples, held):
        s["tuned"] = _complete(net, tok, e, cfg, rt)

    outputs = {}
    if cfg.method == "full":
        outputs["model"] = _replace_dir(out, "model", lambda d: (net.save_pretrained(d), tok.save_pretrained(d)))
    else:
        outputs["adapter"] = _replace_dir(out, "adapter", lambda d: (net.save_pretrained(d), tok.save_pretrained(d)))
        if cfg.merge:
            merged = net.merge_and_unload()
            outputs["merged"] = _replace_dir(out, "merged",
                                             lambda d: (merged.save_pretrained(d), tok.save_pretrained(d)))

    acc = hardware.identify(torch.cuda.get_device_name(rt.device)) if rt.device.type == "cuda" else None
    report = {
        "method": cfg.method, "model": str(base.path), "model_source": base.source,
        "architecture": type(base.model).__name__, "data": {"train": sets[0].summary(),
                                                             **({"eval": sets[1].summary()} if len(sets) > 1 else {})},
        "train_examples": len(train_ex), "train_rows": len(rows), "eval_examples": len(held),
        "bad_rows": [{"file": ds.path, "line": b.line, "reason": b.reason} for ds in sets for b in ds.bad[:100]],
        **counts,
        "base_eval_loss": before["loss"], "tuned_eval_loss": after["loss"], "eval_tokens": after["tokens"],
        "base_token_accuracy": before["token_accuracy"], "tuned_token_accuracy": after["token_accuracy"],
        "base_task": before_task, "tuned_task": after_task,
        **res.to_dict(), "device": str(rt.device), "accelerator": acc.name if acc else None,
        "precision": "bf16 autocast" if rt.amp else "fp32",
        "cost": {"device_hours": res.seconds / 3600,
                 "usd": res.seconds / 3600 * acc.usd_per_hour if acc else None},
        "total_seconds": time.perf_counter() - t_start, "samples": samples, "outputs": outputs,
        "config": cfg.model_dump(mode="json"),
    }
    atomic_write_text(out / "finetune_report.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(out / "finetune_report.md", report_markdown(report))
    return report


REPORT_FILES = ["finetune_report.json", "finetune_report.md", "metrics.jsonl"]
