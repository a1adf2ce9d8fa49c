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

from fmforge.data.documents import ShardWriter
from fmforge.data.formats import DataError, LANGUAGES  # noqa: F401  (re-exported: fmforge.data.collect.DataError)
from fmforge.data.readers import is_hf_dataset, iter_file, iter_hf_dataset
from fmforge.errors import DegenerateResult, InputNotFound


@dataclass
class CollectStats:
    docs: int = 0
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    strict: bool = False
    files_seen: int = 0  # files under the folders walked
    files_matched: int = 0  # of those, matching `include`
    suffixes_seen: dict[str, int] = field(default_factory=dict)  # of the unmatched ones, for the error message
    html_extractor: str = "resiliparse"  # how WARC HTML becomes main text (data.html_extractor)

    def skip(self, reason: str, where: str) -> None:
        if self.strict:
            raise DataError(f"{reason}: {where}")
        self.ignore(reason, where)

    def ignore(self, reason: str, where: str) -> None:
        """Count something that is not a document by design (a WARC request record, an image
        response): counted and shown like a skip, but not an input fault, so --strict goes on."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 3:
            ex.append(where)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_folder(root: Path, include: list[str], stats: CollectStats, exclude_dirs=("site-packages",),
                text_field: str = "text", source: str | None = None) -> Iterator[dict]:
    """Files under `root` whose name matches one of `include`, in sorted (stable) order, each
    read by its format (JSONL, Parquet, WARC, tar, text/code) as a file given directly is.
    Locators are paths relative to `root`, so ids do not depend on where the folder is."""
    source = str(root) if source is None else source
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in exclude_dirs or part == "__pycache__" for part in rel.parts[:-1]):
            continue
        if not path.is_file():
            continue
        stats.files_seen += 1
        if not any(fnmatch(path.name, pat) for pat in include):
            suffix = path.suffix.lower() or path.name
            stats.suffixes_seen[suffix] = stats.suffixes_seen.get(suffix, 0) + 1
            continue
        stats.files_matched += 1
        yield from iter_file(path, stats, text_field, source, rel.as_posix())


def iter_source(source: str, include: list[str], stats: CollectStats, text_field: str = "text") -> Iterator[dict]:
    if source == "stdlib":
        yield from iter_folder(stdlib_root(), include, stats, text_field=text_field, source="stdlib")
        return
    path = Path(source)
    if not path.exists():
        raise InputNotFound(f"data source not found: {source}")
    if path.is_dir() and is_hf_dataset(path):
        yield from iter_hf_dataset(path, stats, text_field)
    elif path.is_dir():
        yield from iter_folder(path, include, stats, text_field=text_field)
    else:
        stats.files_seen += 1
        stats.files_matched += 1
        yield from iter_file(path, stats, text_field)


def nothing_collected(sources: list[str], include: list[str], stats: CollectStats) -> DegenerateResult:
    """The error for a collect that found no document: why, and what to change."""
    where = ", ".join(sources)
    if not stats.files_seen:
        why = f"{where} holds no files"
        fix = "point data.sources (or the command's SOURCES) at a folder or file with documents"
    elif not stats.files_matched:
        top = sorted(stats.suffixes_seen.items(), key=lambda kv: -kv[1])[:5]
        why = (f"none of the {stats.files_seen} files under {where} matches the include patterns {include} "
               f"(the files are {', '.join(f'{k} ({v})' for k, v in top)})")
        fix = "set --include / data.include, e.g. --include '*'"
    else:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(stats.skipped.items(), key=lambda kv: -kv[1]))
        why = f"{stats.files_matched} file(s) read from {where} gave no document ({skipped or 'all empty'})"
        fix = ("check --text-field / data.text_field and the examples that `fmforge data collect` prints"
               if stats.skipped else "add files with text")
    return DegenerateResult(f"nothing collected: {why}; {fix}")


def collect(sources: list[str], include: list[str], out_dir: Path, text_field: str = "text",
            strict: bool = False, html_extractor: str = "resiliparse") -> CollectStats:
    """Read every source into Parquet shards in `out_dir` (written shard by shard, each
    by temp file and rename; shards an earlier collect wrote there and this one did not
    are removed). No document at all is a DegenerateResult, with nothing written."""
    from fmforge.outputs import OutputDir

    stats = CollectStats(strict=strict, html_extractor=html_extractor)
    writer = ShardWriter(out_dir)
    for source in sources:
        for doc in iter_source(source, include, stats, text_field):
            writer.add(doc)
            stats.docs += 1
            stats.bytes += len(doc["text"].encode("utf-8", "surrogatepass"))
    if not stats.docs:
        raise nothing_collected(sources, include, stats)
    shards = writer.close()
    od = OutputDir(out_dir, "data collect")
    od.record(p.name for p in shards)
    od.remove_stale(p.name for p in shards)
    return stats
