"""Collect: turn raw sources into the document table.

A source is a folder (files matched by glob), a JSONL file (.jsonl/.jsonl.gz/.jsonl.zst),
a Parquet file, or the word ``stdlib``: the running interpreter's standard library, the
built-in default corpus every machine has.
"""
from __future__ import annotations

import sysconfig
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterator

from fmforge.data.documents import ShardWriter, make_doc

LANGUAGES = {".py": "python", ".md": "markdown", ".rst": "rst", ".txt": "text", ".c": "c", ".h": "c",
             ".js": "javascript", ".ts": "typescript", ".rs": "rust", ".go": "go", ".java": "java",
             ".cpp": "cpp", ".sh": "shell", ".html": "html", ".json": "json", ".yaml": "yaml", ".toml": "toml"}


@dataclass
class CollectStats:
    docs: int = 0
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
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
        if b"\0" in raw[:8192]:
            stats.skip("binary", str(path))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            stats.skip("invalid_utf8", f"{path}: byte {e.start}")
            continue
        yield make_doc(text, source, str(rel), language=LANGUAGES.get(path.suffix.lower(), "text"))


def iter_source(source: str, include: list[str], stats: CollectStats) -> Iterator[dict]:
    if source == "stdlib":
        yield from iter_folder(stdlib_root(), include, stats)
        return
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"data source not found: {source}")
    if path.is_dir():
        yield from iter_folder(path, include, stats)
    else:
        from fmforge.data.readers import iter_file  # format readers (JSONL, Parquet, WARC)

        yield from iter_file(path, stats)


def collect(sources: list[str], include: list[str], out_dir: Path) -> CollectStats:
    stats = CollectStats()
    writer = ShardWriter(out_dir)
    for source in sources:
        for doc in iter_source(source, include, stats):
            writer.add(doc)
            stats.docs += 1
            stats.bytes += len(doc["text"].encode("utf-8", "surrogatepass"))
    writer.close()
    return stats
