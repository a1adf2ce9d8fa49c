"""Decontamination: find training documents that share a long word n-gram (13 words by
default, as in GPT-3) with any evaluation example, so benchmark scores stay honest.

Evaluation files are read in the formats they come in: JSONL (.gz/.zst) of any schema
(HellaSwag ``ctx``/``endings``, ARC/PIQA ``query``/``choices``, HumanEval ``prompt``/
``canonical_solution``/``test``, GSM8K ``question``/``answer``, ...: every string inside a
record, each on its own), CSV (MMLU: every cell of a row), plain text (each paragraph).
Words are the shared tokenisation, lowercased, so case does not hide a match. An n-gram counts
only when at least half of its tokens are words (hold a letter or a digit): a run of punctuation
(an rst heading's ``#####`` underline, a ``* * *`` scene break) is in countless documents and
evaluation sets alike, and is no leak.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from fmforge.data.text import is_punct, ngram_hashes, word_hashes, words


def _open(path: Path) -> io.TextIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    if name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True)
        return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _strings(obj) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def eval_texts(path: Path) -> Iterator[str]:
    """The texts of one evaluation file: one per record (all its strings joined), so an
    n-gram may span a question and its answer as it would in a leaked copy."""
    name = path.name.lower().removesuffix(".gz").removesuffix(".zst")
    with _open(path) as f:
        if name.endswith((".jsonl", ".json", ".ndjson")):
            for line in f:
                if line.strip():
                    try:
                        yield "\n".join(_strings(json.loads(line)))
                    except json.JSONDecodeError:
                        continue
        elif name.endswith(".csv"):
            for row in csv.reader(f):
                yield "\n".join(row)
        else:
            yield from (p for p in f.read().split("\n\n") if p.strip())


def expand(paths: list[str]) -> list[Path]:
    """Files and folders (searched recursively for eval-shaped files), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith("."))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"decontamination file not found: {p}")
    return out


def build_index(paths: list[str], n: int) -> np.ndarray:
    """Sorted unique hashes of every word n-gram of the evaluation sets. Records shorter
    than n words are indexed whole (an exact copy of a short item is still a leak)."""
    parts = []
    for path in expand(paths):
        for text in eval_texts(path):
            toks = words(text)
            if len(toks) >= min(n, 8):
                parts.append(_ngrams(word_hashes(toks), toks, n))
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)


def _ngrams(wh: np.ndarray, toks: list[str], n: int) -> np.ndarray:
    """The hashes of the n-grams of ``toks`` (hashes ``wh``) at least half of whose tokens are words."""
    ng = ngram_hashes(wh, n)
    k = min(n, len(toks))
    is_word = np.fromiter((not is_punct(t) for t in toks), dtype=np.int64, count=len(toks))
    per_window = np.convolve(is_word, np.ones(k, dtype=np.int64), mode="valid")
    return ng[2 * per_window >= k]


def contaminated(wh: np.ndarray, index: np.ndarray, n: int, toks: list[str]) -> int:
    """How many of a document's word n-grams (``toks``, hashes ``wh``) appear in the evaluation index."""
    if len(index) == 0 or len(wh) == 0:
        return 0
    ng = _ngrams(wh, toks, n)
    pos = np.searchsorted(index, ng)
    pos[pos == len(index)] = 0
    return int((index[pos] == ng).sum())
