"""Held-out language modelling of `fmforge eval --model`: loss and bits per byte on the
run's validation shards, or on text / JSONL(.gz/.zst) files given with --text
(fmforge.eval.heldout does the arithmetic), broken down by source:

- validation shards: the `source` column of the run's prepared documents
  (fmforge.eval.valdocs, as the eval stage); where prepare/ no longer matches the
  tokenizer stage's recorded plan the breakdown is left out (`sources_note`).
- files: a JSONL row's `source` field where it has one, else the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fmforge.errors import InputNotFound, UserError
from fmforge.eval.heldout import HeldoutResult, iter_docs, score_by_source
from fmforge.eval.loglik import LM
from fmforge.eval.valdocs import ShardsMismatch, with_sources
from fmforge.eval.tasks.base import iter_rows, open_maybe_gz


def texts_of(path: Path, field: str = "text") -> list[tuple[str, str]]:
    """(text, source) of each document of a --text file."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"--text {path}: not found")
    if ".jsonl" in path.name or ".json" == path.suffix:
        out = []
        for n, row in iter_rows(path):
            t = row.get(field)
            if not isinstance(t, str):
                raise UserError(f"{path}:{n}: field {field!r} is missing or not a string")
            src = row.get("source")
            out.append((t, src if isinstance(src, str) and src else str(path)))
        return out
    try:
        with open_maybe_gz(path) as f:  # plain text, or .gz / .zst of it
            return [(f.read(), str(path))]
    except (UnicodeDecodeError, EOFError, OSError) as e:
        raise UserError(f"--text {path}: not readable UTF-8 text ({e})") from None


def _merge(results: list[HeldoutResult]) -> HeldoutResult:
    return HeldoutResult(sum(r.docs for r in results), sum(r.tokens for r in results),
                         sum(r.bytes for r in results), sum(r.nats for r in results))


def _summary(r: HeldoutResult) -> dict:
    return {"loss": r.loss, "bpb": r.bpb, "ppl": float(np.exp(r.loss)), "docs": r.docs, "tokens": r.tokens,
            "bytes": r.bytes}


def _result(per: dict[str, HeldoutResult], stride: int) -> dict:
    out = _summary(_merge(list(per.values())))
    out["stride"] = stride
    out["sources"] = {k: _summary(v) for k, v in sorted(per.items())}
    return out


def heldout_lm(lm: LM, files: list[Path], run_dir: Path | None, max_bytes: int | None = None,
               stride: int | None = None) -> dict | None:
    ctx = lm.max_length
    stride = min(stride or ctx, ctx)
    batch = max(1, lm.batch_tokens // ctx)
    if files:
        docs = [(np.asarray(lm.encode(t), dtype=np.int64), len(t.encode("utf-8", "surrogatepass")), src)
                for f in files for t, src in texts_of(f) if t]
        return _result(score_by_source(lm.model, docs, ctx, lm.device, batch, stride, lm.autocast), stride)
    shards_dir = run_dir / "tokenizer" / "shards" if run_dir else None
    if shards_dir is None or not shards_dir.is_dir():
        return None
    from fmforge.tokenizer.shards import open_split

    try:
        shards = open_split(shards_dir, "val")
    except FileNotFoundError:
        return None
    docs = iter_docs(shards, max_bytes=max_bytes)
    try:
        keyed = ((ids, n, src) for ids, n, src, _ in with_sources(docs, run_dir))
        why = ""
    except ShardsMismatch as e:  # scored all the same, without the breakdown
        keyed, why = ((ids, n, "") for ids, n in docs), str(e)
    out = _result(score_by_source(lm.model, keyed, ctx, lm.device, batch, stride, lm.autocast), stride)
    if why:
        out.pop("sources")
        out["sources_note"] = f"no per-source breakdown: {why}"
    return out
