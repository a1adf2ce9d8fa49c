"""Prepare: clean and filter the collected documents, recording why each one is dropped.

Skeleton stages: Unicode normalisation, length filter, exact de-duplication. Every input
document is either kept or counted under a reason, with a few examples per reason.
"""
from __future__ import annotations

import json
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import xxhash

from fmforge.config import DataConfig
from fmforge.data.documents import ShardWriter, read_docs


@dataclass
class PrepareStats:
    docs_in: int = 0
    bytes_in: int = 0
    docs_out: int = 0
    bytes_out: int = 0
    removed: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, doc: dict) -> None:
        self.removed[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 3:
            ex.append(json.loads(doc["meta"]).get("path", doc["id"]))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["removed"] = dict(self.removed)
        return d


def clean_text(text: str, form: str) -> str:
    text = text.replace("\r\n", "\n").replace("\x00", "")
    if form != "none":
        text = unicodedata.normalize(form, text)
    return text


def prepare(in_dir: Path, out_dir: Path, cfg: DataConfig) -> PrepareStats:
    stats = PrepareStats()
    seen: set[int] = set()
    writer = ShardWriter(out_dir)
    for doc in read_docs(in_dir):
        stats.docs_in += 1
        stats.bytes_in += len(doc["text"].encode("utf-8", "surrogatepass"))
        text = clean_text(doc["text"], cfg.normalize)
        if len(text) < cfg.min_chars:
            stats.drop("too_short", doc)
            continue
        if len(text) > cfg.max_chars:
            stats.drop("too_long", doc)
            continue
        if cfg.dedup_exact:
            h = xxhash.xxh3_64_intdigest(" ".join(text.split()).encode("utf-8", "surrogatepass"))
            if h in seen:
                stats.drop("exact_duplicate", doc)
                continue
            seen.add(h)
        doc["text"] = text
        writer.add(doc)
        stats.docs_out += 1
        stats.bytes_out += len(text.encode("utf-8", "surrogatepass"))
    writer.close()
    (out_dir / "stats.json").write_text(json.dumps(stats.to_dict(), indent=2))
    return stats
