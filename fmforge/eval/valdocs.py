"""The source and text of each document in a run's validation shards: both the eval stage
(fmforge.eval.run) and `fmforge eval --model` (fmforge.eval.lm_text) ask here.

The shards hold token ids and byte counts only. The tokenizer stage wrote the validation
documents in the order it read them from prepare/, so a document's source and text are
those of the matching validation document of prepare/. The stage's plan (first line of
shards/progress.jsonl: the split's fraction and seed, prepare/'s files with their sizes and
times) is checked against prepare/ first, and every document's byte count against the
shards' as it is read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from fmforge.errors import UserError

RERUN = "re-run with `fmforge run --force`"


class ShardsMismatch(UserError):
    """prepare/ is not the document set the validation shards were encoded from."""


def _differs(have: list, want: list) -> str:
    """The first file of prepare/ that is not as the plan recorded it."""
    now, then = {n: rest for n, *rest in have}, {n: rest for n, *rest in want}
    for name in sorted(now.keys() | then.keys()):
        if name not in now:
            return f"{name} is gone"
        if name not in then:
            return f"{name} is new"
        if now[name] != then[name]:
            return f"{name} changed (size or time)"
    return "the files differ"


def val_documents(run_dir: Path) -> Iterator[tuple[str, str]]:
    """(source, text) of the run's validation documents in shard order. The plan is checked
    at the call, before anything is read: ShardsMismatch names the file that differs."""
    from fmforge.data.documents import iter_batches, shard_paths
    from fmforge.tokenizer.encode import PROGRESS, is_validation, plan_inputs

    shards, prep = run_dir / "tokenizer" / "shards", run_dir / "prepare"
    try:
        with open(shards / PROGRESS, encoding="utf-8") as f:
            plan = json.loads(f.readline())["plan"]
        fraction, seed, inputs = plan["val_fraction"], plan["seed"], plan["inputs"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ShardsMismatch(f"{shards / PROGRESS} (the tokenizer stage's plan) is missing or unreadable") from None
    have = plan_inputs(prep) if prep.is_dir() else []
    if have != inputs:
        raise ShardsMismatch(f"{prep} is not the document set the validation shards were encoded from "
                             f"({prep / _differs(have, inputs)}); {RERUN}")

    def gen() -> Iterator[tuple[str, str]]:
        for path in shard_paths(prep):
            for batch in iter_batches(path, ("id", "text", "source"), 4096):
                for i, t, s in zip(*(batch.column(c).to_pylist() for c in ("id", "text", "source"))):
                    if is_validation(i, fraction, seed):
                        yield s or "", t

    return gen()


def with_sources(docs: Iterable[tuple[np.ndarray, int]], run_dir: Path
                 ) -> Iterator[tuple[np.ndarray, int, str, str]]:
    """(ids, bytes, source, text) of `docs`, the (ids, bytes) of the run's validation shards
    in order (fmforge.eval.heldout.iter_docs). ShardsMismatch at the call (val_documents);
    UserError while reading when prepare/ runs out of documents or a text's size differs."""
    shards, prep = run_dir / "tokenizer" / "shards", run_dir / "prepare"
    texts = val_documents(run_dir)

    def gen():
        for k, (ids, nbytes) in enumerate(docs):
            d = next(texts, None)
            if d is None:
                raise UserError(f"{shards} holds more validation documents than {prep}; {RERUN}")
            size = len(d[1].encode("utf-8", "surrogatepass"))
            if size != nbytes:  # e.g. prepare re-run by hand after the shards were made
                raise UserError(f"the validation texts in {prep} and the token shards in {shards} disagree (document "
                                f"{k}: {size} vs {nbytes} bytes); {RERUN}")
            yield ids, nbytes, d[0], d[1]

    return gen()
