"""Measure tokenizers on text: compression, vocabulary use, exact round trip.

For each tokenizer and each source of the data given: bytes per token (UTF-8 bytes of
the text / its tokens; higher is better compression), tokens per word (words split on
whitespace), the share of the vocabulary that the text uses, and whether
decode(encode(text)) gives back the text exactly (after the tokenizer's own Unicode
normaliser, if it has one) for every document; a failure names the document.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from fmforge.tokenizer.fast import Encoder

MAX_FAILURES_LISTED = 20


@dataclass
class SourceStats:
    docs: int = 0
    bytes: int = 0
    tokens: int = 0
    words: int = 0

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / max(1, self.tokens)

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / max(1, self.words)


@dataclass
class TokenizerReport:
    name: str
    vocab_size: int
    encoder: str
    sources: dict[str, SourceStats] = field(default_factory=dict)
    used_ids: int = 0
    round_trip_failures: int = 0
    failed_docs: list[str] = field(default_factory=list)

    @property
    def total(self) -> SourceStats:
        t = SourceStats()
        for s in self.sources.values():
            t.docs, t.bytes, t.tokens, t.words = t.docs + s.docs, t.bytes + s.bytes, t.tokens + s.tokens, t.words + s.words
        return t

    @property
    def utilisation(self) -> float:
        return self.used_ids / max(1, self.vocab_size)

    def to_dict(self) -> dict:
        per = {k: {**asdict(v), "bytes_per_token": v.bytes_per_token, "tokens_per_word": v.tokens_per_word}
               for k, v in self.sources.items()}
        t = self.total
        return {"name": self.name, "vocab_size": self.vocab_size, "encoder": self.encoder,
                "docs": t.docs, "bytes": t.bytes, "tokens": t.tokens, "bytes_per_token": t.bytes_per_token,
                "tokens_per_word": t.tokens_per_word, "vocab_used": self.used_ids, "utilisation": self.utilisation,
                "round_trip_failures": self.round_trip_failures, "failed_docs": self.failed_docs, "sources": per}


def iter_texts(paths: Sequence[Path], max_bytes: Optional[int] = None) -> Iterator[tuple[str, str, str]]:
    """(source, document label, text) from prepared Parquet folders/files, JSONL(.gz/.zst) or
    text files; at most about `max_bytes` of text from each path."""
    from fmforge.data.collect import CollectStats
    from fmforge.data.documents import check_shards, read_docs
    from fmforge.data.formats import DataError, format_of
    from fmforge.data.readers import iter_file
    from fmforge.errors import InputNotFound

    for path in map(Path, paths):
        total = 0
        if not path.exists():
            raise InputNotFound(f"data not found: {path}")
        if path.is_dir() or format_of(path.name) == "parquet":
            check_shards(path, "report data")
            docs = ((Path(d["source"]).name, _label(d), d["text"]) for d in read_docs(path))
        elif format_of(path.name) == "jsonl":
            docs = ((path.name, _label(d), d["text"]) for d in iter_file(path, CollectStats(strict=True)))
        else:
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not UTF-8 text (byte {e.start}); give text, JSONL or prepared Parquet") from None
            if "\0" in text[:8192]:
                raise DataError(f"{path}: binary file, not text; give text, JSONL or prepared Parquet")
            docs = iter([(path.name, str(path), text)])
        for source, label, text in docs:
            yield source, label, text
            total += len(text)
            if max_bytes and total >= max_bytes:
                break


def _label(doc: dict) -> str:
    try:
        return f"{doc['id']} ({json.loads(doc['meta']).get('path', '')})"
    except (ValueError, TypeError, KeyError):
        return doc.get("id", "?")


def round_trips(enc: Encoder, text: str, ids: list[int]) -> bool:
    want = enc.normalize(text)
    if enc.tiktoken is not None:  # compare bytes: a decode that replaces bad UTF-8 must not hide a failure
        return enc.tiktoken.decode_bytes(ids) == want.encode("utf-8", "surrogatepass")
    return enc.hf.decode(ids, skip_special_tokens=False) == want


def measure(tokenizers: Sequence[Path], data: Sequence[Path], max_bytes: Optional[int] = None) -> list[TokenizerReport]:
    encs = [Encoder.from_path(p) for p in tokenizers]
    reports = [TokenizerReport(_name(p), e.vocab_size, e.kind) for p, e in zip(tokenizers, encs)]
    used = [np.zeros(e.vocab_size, dtype=bool) for e in encs]
    for source, label, text in iter_texts(data, max_bytes):
        nbytes, words = len(text.encode("utf-8", "surrogatepass")), len(text.split())
        for enc, rep, u in zip(encs, reports, used):
            ids = enc.encode(text)
            s = rep.sources.setdefault(source, SourceStats())
            s.docs, s.bytes, s.tokens, s.words = s.docs + 1, s.bytes + nbytes, s.tokens + len(ids), s.words + words
            if ids:
                u[np.asarray(ids, dtype=np.int64)] = True
            if not round_trips(enc, text, ids):
                rep.round_trip_failures += 1
                if len(rep.failed_docs) < MAX_FAILURES_LISTED:
                    rep.failed_docs.append(f"{source}: {label}")
    for rep, u in zip(reports, used):
        rep.used_ids = int(u.sum())
    return reports


def _name(path: Path) -> str:
    path = Path(path)
    return str(path.parent if path.name == "tokenizer.json" else path)


def table_rows(reports: list[TokenizerReport]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table (one row per tokenizer)."""
    sources = sorted({s for r in reports for s in r.sources})
    head = ["tokenizer", "vocab", "bytes/token", "tokens/word", *[f"B/tok {s}" for s in sources],
            "vocab used", "round trip"]
    rows = []
    for r in reports:
        t = r.total
        rows.append([r.name, f"{r.vocab_size:,}", f"{t.bytes_per_token:.3f}", f"{t.tokens_per_word:.3f}",
                     *[f"{r.sources[s].bytes_per_token:.3f}" if s in r.sources else "—" for s in sources],
                     f"{100 * r.utilisation:.1f}%",
                     "exact" if not r.round_trip_failures else f"{r.round_trip_failures} FAILED"])
    return head, rows
