"""The document table every data stage reads and writes: Parquet shards of
``{id, text, source, meta}`` (meta is a JSON string), written atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())])


def doc_id(source: str, locator: str) -> str:
    """Stable id: a hash of where the document came from, not of its content."""
    return xxhash.xxh3_128_hexdigest(f"{source}\0{locator}".encode("utf-8", "surrogatepass"))


def make_doc(text: str, source: str, locator: str, **meta) -> dict:
    return {"id": doc_id(source, locator), "text": text, "source": source, "meta": json.dumps({"path": locator, **meta})}


def write_shard(docs: list[dict], path: Path) -> None:
    """Write one shard atomically: a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table = pa.Table.from_pylist(docs, schema=SCHEMA)
    # small row groups let prepare's tasks read a row range without the whole shard
    pq.write_table(table, tmp, compression="zstd", row_group_size=256)
    os.replace(tmp, path)


class ShardWriter:
    """Buffers documents and writes `docs-NNNNN.parquet` shards of about `shard_bytes`."""

    def __init__(self, out_dir: Path, shard_bytes: int = 64 << 20, prefix: str = "docs"):
        self.out_dir, self.shard_bytes, self.prefix = Path(out_dir), shard_bytes, prefix
        self.buf: list[dict] = []
        self.size = 0
        self.shards: list[Path] = []

    def add(self, doc: dict) -> None:
        self.buf.append(doc)
        self.size += len(doc["text"])
        if self.size >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        path = self.out_dir / f"{self.prefix}-{len(self.shards):05d}.parquet"
        write_shard(self.buf, path)
        self.shards.append(path)
        self.buf, self.size = [], 0

    def close(self) -> list[Path]:
        self.flush()
        return self.shards


def shard_paths(folder: Path) -> list[Path]:
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def read_docs(folder: Path, columns: list[str] | None = None, batch_size: int = 1024) -> Iterator[dict]:
    """Stream documents from every shard in a folder, in order."""
    for path in shard_paths(folder):
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            yield from batch.to_pylist()


def write_docs(docs: Iterable[dict], out_dir: Path, shard_bytes: int = 64 << 20) -> list[Path]:
    w = ShardWriter(out_dir, shard_bytes)
    for d in docs:
        w.add(d)
    return w.close()
