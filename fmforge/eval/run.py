"""The eval and sample stages of a run: held-out bpb next to gzip/xz, and a completion."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from fmforge.config import Recipe
from fmforge.errors import InputNotFound, UserError
from fmforge.eval.generate import generate
from fmforge.eval.heldout import HeldoutResult, compressed_sizes, compressor_bpb, iter_docs, score_by_source
from fmforge.eval.valdocs import with_sources
from fmforge.tokenizer.bpe import EOT, load
from fmforge.tokenizer.shards import open_split
from fmforge.model.weights import load_model
from fmforge.outputs import atomic_write_text


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def evaluate_run(recipe: Recipe, run_dir: Path, out: Path) -> dict:
    dev = _device()
    model = load_model(run_dir / "train", dev)
    shards = open_split(run_dir / "tokenizer" / "shards", "val")
    e = recipe.eval
    # each document with its source and text (for the compressors), checked against prepare/
    docs = list(with_sources(iter_docs(shards, e.max_docs, e.max_bytes), run_dir))
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if dev.type == "cuda" else None
    texts, sources, sizes = [d[3] for d in docs], [d[2] for d in docs], [d[1] for d in docs]
    per = score_by_source(model, [d[:3] for d in docs], model.cfg.context_length,
                          dev, batch_size=16, stride=e.stride, autocast=autocast)
    res = HeldoutResult(len(docs), sum(r.tokens for r in per.values()), sum(sizes), sum(r.nats for r in per.values()))
    summary = res.to_dict()
    packed = [compressed_sizes(t) for t in texts]
    summary.update({k: v for k, v in compressor_bpb(sizes=packed).items() if k in ("gzip_bpb", "xz_bpb")})
    summary["sources"] = {}  # each source's share of the held-out documents, model next to gzip / xz
    for src, r in sorted(per.items()):
        base = compressor_bpb(sizes=[z for z, s in zip(packed, sources) if s == src])
        summary["sources"][src] = {**r.to_dict(), "gzip_bpb": base["gzip_bpb"], "xz_bpb": base["xz_bpb"]}
    if e.tasks:  # downstream tasks of the recipe (docs/eval.md), on the same model
        from fmforge.eval.commands import run_tasks
        from fmforge.eval.harness import core_score
        from fmforge.eval.load import load_for_eval

        lm = load_for_eval(run_dir, dev, e.batch_tokens).lm
        lm.autocast = autocast
        summary["tasks"], _ = run_tasks(lm, e.tasks, e, e.task_limit)
        summary["core"] = core_score(summary["tasks"])
    train_summary = _train_summary(run_dir / "train" / "summary.json")
    summary["cost"] = _cost(train_summary, recipe)
    atomic_write_text(out / "eval.json", json.dumps(summary, indent=2))
    return summary


def _train_summary(path: Path) -> dict:
    """What training recorded about itself; eval needs its FLOPs, tokens and seconds."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputNotFound(f"{path} is missing: the run has not finished training; run `fmforge train`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not readable JSON ({e}); re-run `fmforge train`") from None
    missing = [k for k in ("flops_per_token", "tokens", "seconds") if not isinstance(data, dict) or k not in data]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; re-run `fmforge train`")
    return data


def _cost(train_summary: dict, recipe: Recipe) -> dict:
    """What the training run cost, on the device it ran on (see fmforge.cost)."""
    from fmforge.cost import run_cost

    return run_cost(train_summary["flops_per_token"], train_summary["tokens"], train_summary["seconds"],
                    train_summary.get("accelerator"), train_summary.get("devices", 1),
                    recipe.train.price_per_gpu_hour or None)


def sample_run(recipe: Recipe, run_dir: Path, out: Path) -> dict:
    model = load_model(run_dir / "train", _device())
    tok = load(run_dir / "tokenizer")
    e = recipe.eval
    ids = [tok.token_to_id(EOT)] + tok.encode(e.prompt, add_special_tokens=False).ids
    new = generate(model, ids, e.max_new_tokens, e.temperature, e.top_k, stop_id=tok.token_to_id(EOT))
    text = tok.decode(new, skip_special_tokens=False)
    atomic_write_text(out / "sample.txt", e.prompt + text)
    return {"prompt": e.prompt, "sample": text}
