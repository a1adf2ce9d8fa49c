"""Collect: turn raw sources into the document table.

A source is a folder (files matched by glob; a Hugging Face ``save_to_disk`` folder is
read as a dataset), a file that fmforge.data.readers knows (JSONL[.gz|.zst], Parquet,
WARC[.gz], tar[.gz], text), or the word ``stdlib``: the running interpreter's standard
library, the built-in default corpus every machine has. What cannot be read is counted
with file and line (or, with ``strict``, raised as ``DataError``).
"""
from __future__ import annotations

import sysconfig
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterator

from fmforge.data.documents import ShardWriter, make_doc
from fmforge.errors import UserError
from fmforge.data.readers import decode_file, is_hf_dataset, iter_file, iter_hf_dataset

LANGUAGES = {".py": "python", ".md": "markdown", ".rst": "rst", ".txt": "text", ".c": "c", ".h": "c",
             ".js": "javascript", ".ts": "typescript", ".rs": "rust", ".go": "go", ".java": "java",
             ".cpp": "cpp", ".sh": "shell", ".html": "html", ".json": "json", ".yaml": "yaml", ".toml": "toml"}


class DataError(UserError):
    """Unreadable input in strict mode; the message says which file and line."""


@dataclass
class CollectStats:
    docs: int = 0
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    strict: bool = False

    def skip(self, reason: str, where: str) -> None:
        if self.strict:
            raise DataError(f"{reason}: {where}")
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 3:
            ex.append(where)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_folder(root: Path, include: list[str], stats: CollectStats, exclude_dirs=("site-packages",)) -> Iterator[dict]:
    """Files under `root` whose name matches one of `include`, in sorted (stable) order."""
    source = str(root)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in exclude_dirs or part == "__pycache__" for part in rel.parts[:-1]):
            continue
        if not path.is_file() or not any(fnmatch(path.name, pat) for pat in include):
            continue
        try:
            raw = path.read_bytes()
        except OSError as e:
            stats.skip("unreadable", f"{path}: {e.strerror}")
            continue
        text = decode_file(raw, str(path), stats)
        if text is None:
            continue
        yield make_doc(text, source, str(rel), language=LANGUAGES.get(path.suffix.lower(), "text"))


def iter_source(source: str, include: list[str], stats: CollectStats, text_field: str = "text") -> Iterator[dict]:
    if source == "stdlib":
        yield from iter_folder(stdlib_root(), include, stats)
        return
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"data source not found: {source}")
    if path.is_dir() and is_hf_dataset(path):
        yield from iter_hf_dataset(path, stats, text_field)
    elif path.is_dir():
        yield from iter_folder(path, include, stats)
    else:
        yield from iter_file(path, stats, text_field)


def collect(sources: list[str], include: list[str], out_dir: Path, text_field: str = "text",
            strict: bool = False) -> CollectStats:
    """Read every source into Parquet shards in `out_dir` (written shard by shard, each
    by temp file and rename)."""
    stats = CollectStats(strict=strict)
    writer = ShardWriter(out_dir)
    for source in sources:
        for doc in iter_source(source, include, stats, text_field):
            writer.add(doc)
            stats.docs += 1
            stats.bytes += len(doc["text"].encode("utf-8", "surrogatepass"))
    writer.close()
    return stats
