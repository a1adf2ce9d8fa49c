"""Held-out language modelling of `fmforge eval --model`: loss and bits per byte on the
run's validation shards, or on text / JSONL(.gz/.zst) files given with --text, each
file a source of its own in the breakdown (fmforge.eval.heldout does the arithmetic)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fmforge.errors import InputNotFound, UserError
from fmforge.eval.heldout import HeldoutResult, iter_docs, score_docs
from fmforge.eval.loglik import LM
from fmforge.eval.tasks.base import iter_rows


def texts_of(path: Path, field: str = "text") -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"--text {path}: not found")
    if ".jsonl" in path.name or ".json" == path.suffix:
        out = []
        for n, row in iter_rows(path):
            t = row.get(field)
            if not isinstance(t, str):
                raise UserError(f"{path}:{n}: field {field!r} is missing or not a string")
            out.append(t)
        return out
    try:
        return [path.read_text(encoding="utf-8")]
    except UnicodeDecodeError as e:
        raise UserError(f"--text {path}: not UTF-8 text (byte {e.start})") from None


def _merge(results: list[HeldoutResult]) -> HeldoutResult:
    return HeldoutResult(sum(r.docs for r in results), sum(r.tokens for r in results),
                         sum(r.bytes for r in results), sum(r.nats for r in results))


def _summary(r: HeldoutResult) -> dict:
    return {"loss": r.loss, "bpb": r.bpb, "ppl": float(np.exp(r.loss)), "docs": r.docs, "tokens": r.tokens,
            "bytes": r.bytes}


def heldout_lm(lm: LM, files: list[Path], run_dir: Path | None, max_bytes: int | None = None) -> dict | None:
    ctx = lm.max_length
    batch = max(1, lm.batch_tokens // ctx)
    if files:
        per = {}
        for f in files:
            docs = [(np.asarray(lm.encode(t), dtype=np.int64), len(t.encode("utf-8", "surrogatepass")))
                    for t in texts_of(f) if t]
            per[str(f)] = score_docs(lm.model, docs, ctx, lm.device, batch_size=batch, autocast=lm.autocast)
        out = _summary(_merge(list(per.values())))
        out["sources"] = {k: _summary(v) for k, v in per.items()}
        return out
    shards_dir = run_dir / "tokenizer" / "shards" if run_dir else None
    if shards_dir is None or not shards_dir.is_dir():
        return None
    from fmforge.tokenizer.shards import open_split

    try:
        shards = open_split(shards_dir, "val")
    except FileNotFoundError:
        return None
    res = score_docs(lm.model, iter_docs(shards, max_bytes=max_bytes), ctx, lm.device, batch_size=batch,
                     autocast=lm.autocast)
    out = _summary(res)
    out["sources"] = {str(shards_dir): _summary(res)}
    return out
