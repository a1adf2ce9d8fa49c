"""Readers for single files: JSONL (.jsonl, .jsonl.gz, .jsonl.zst) and Parquet.

Each streams (constant memory) and counts what it cannot read, with file and line,
instead of crashing.
"""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Iterator

from fmforge.data.documents import make_doc


def open_text(path: Path) -> io.TextIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        raw = gzip.open(path, "rb")
    elif name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True)
    else:
        raw = open(path, "rb")
    return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8", errors="surrogateescape", newline="\n")


def iter_jsonl(path: Path, stats, text_field: str = "text") -> Iterator[dict]:
    source = str(path)
    with open_text(path) as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except (EOFError, OSError, Exception) as e:  # truncated .gz/.zst stream
                stats.skip("truncated_file", f"{path}: after line {lineno}: {e}")
                return
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                stats.skip("malformed_json", f"{path}:{lineno}: {e.msg}")
                continue
            text = obj.get(text_field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                stats.skip("missing_text", f"{path}:{lineno}: field '{text_field}' is not a string")
                continue
            meta = {k: v for k, v in obj.items() if k != text_field}
            yield make_doc(text, source, f"line:{lineno}", **meta)


def iter_parquet(path: Path, stats, text_field: str = "text") -> Iterator[dict]:
    import pyarrow.parquet as pq

    source = str(path)
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            row += 1
            text = rec.get(text_field)
            if not isinstance(text, str):
                stats.skip("missing_text", f"{path}: row {row}: field '{text_field}' is not a string")
                continue
            meta = {k: v for k, v in rec.items() if k != text_field}
            yield make_doc(text, source, f"row:{row}", **meta)


def iter_file(path: Path, stats, text_field: str = "text") -> Iterator[dict]:
    name = path.name.lower()
    if any(name.endswith(s) for s in (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")):
        yield from iter_jsonl(path, stats, text_field)
    elif name.endswith(".parquet"):
        yield from iter_parquet(path, stats, text_field)
    else:
        raise ValueError(f"{path}: unknown file format (expected a folder, .jsonl[.gz|.zst] or .parquet)")
