"""The document table every data stage reads and writes: Parquet shards of
``{id, text, source, meta}`` (meta is a JSON string), written atomically.

Any Parquet file with a string ``text`` column is also accepted as input (a user's own):
``complete`` fills what it lacks: an id from the file name, row and content (the same on
every machine), ``source`` from the file name, ``meta`` from the other columns."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())])


def doc_id(locator: str, text: str) -> str:
    """Stable id: a hash of where the document is inside its source (a path relative to the
    source folder, or a file name, plus row/line; never an absolute path, which differs
    between machines) and of its content. The train/validation split hashes this id."""
    content = xxhash.xxh3_64_hexdigest(text.encode("utf-8", "surrogatepass"))
    return xxhash.xxh3_128_hexdigest(f"{locator}\0{content}".encode("utf-8", "surrogatepass"))


def make_doc(text: str, source: str, locator: str, **meta) -> dict:
    return {"id": doc_id(locator, text), "text": text, "source": source, "meta": json.dumps({"path": locator, **meta})}


ROW_GROUP_ROWS = 256  # small row groups let prepare's tasks read a row range without the whole shard ...
ROW_GROUP_BYTES = 1 << 20  # ... and bounded by text bytes, so task sizes come from the metadata alone


def write_shard(docs: list[dict], path: Path) -> None:
    """Write one shard atomically: a temp file in the same folder, then rename."""
    write_table_shard(pa.Table.from_pylist(docs, schema=SCHEMA), path)


def write_table_shard(table: pa.Table, path: Path) -> None:
    """A table of documents as one shard, atomically, in row groups of at most
    ROW_GROUP_ROWS rows that end after the document reaching ROW_GROUP_BYTES of text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    cum = np.cumsum(pc.binary_length(table.column("text")).to_numpy(zero_copy_only=False), dtype=np.int64)
    with pq.ParquetWriter(tmp, table.schema, compression="zstd") as w:
        start, n = 0, table.num_rows
        if n == 0:
            w.write_table(table)
        while start < n:
            base = int(cum[start - 1]) if start else 0
            end = min(int(np.searchsorted(cum, base + ROW_GROUP_BYTES, side="left")) + 1, start + ROW_GROUP_ROWS, n)
            w.write_table(table.slice(start, end - start), row_group_size=end - start)
            start = end
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


def check_shards(folder: Path, what: str = "input") -> list[Path]:
    """The shards of a document folder (or one Parquet file), each checked to have a string
    `text` column; DataError (one line: which file, what it has, the command that makes
    what is needed) otherwise."""
    from fmforge.data.formats import DataError
    from fmforge.errors import InputNotFound

    folder = Path(folder)
    if not folder.exists():
        raise InputNotFound(f"{what} not found: {folder}")
    paths = shard_paths(folder)
    if not paths:
        # the hint names a new folder: collect never writes into the folder of raw files it reads
        raise DataError(f"{what} {folder} holds no Parquet shards (*.parquet): make them with "
                        f"`fmforge data collect {folder} --out {folder.with_name(folder.name + '-collected')}` "
                        "and give that folder instead")
    for p in paths:
        try:
            schema = pq.read_schema(p)
        except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError
            raise DataError(f"{p}: not a readable Parquet file ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
        if "text" not in schema.names:
            raise DataError(f"{p}: no 'text' column (columns: {', '.join(schema.names) or 'none'}); "
                            f"make a document table from it with `fmforge data collect {p} --text-field COLUMN "
                            "--out DIR` and use DIR")
        if not (pa.types.is_string(schema.field("text").type) or pa.types.is_large_string(schema.field("text").type)):
            raise DataError(f"{p}: column 'text' is {schema.field('text').type}, not text; make a document table "
                            f"with `fmforge data collect {p} --text-field COLUMN --out DIR`")
    return paths


def text_lengths(pf: pq.ParquetFile) -> np.ndarray:
    """Bytes of text per row of a shard: the group's mean from the metadata (no data read) where a
    row group is small, as fmforge writes them (fmforge.data.documents.ROW_GROUP_BYTES);
    read from the text column where it is larger (a user's own Parquet)."""
    meta = pf.metadata
    col = pf.schema_arrow.get_field_index("text")
    out = []
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        size = rg.column(col).total_uncompressed_size if col >= 0 else rg.total_byte_size
        if size > 2 * ROW_GROUP_BYTES and rg.num_rows > 1 and col >= 0:
            text = pf.read_row_group(g, columns=["text"]).column("text")
            out.append(pc.binary_length(text).to_numpy(zero_copy_only=False).astype(np.int64))
        else:
            out.append(np.full(rg.num_rows, size // max(1, rg.num_rows), dtype=np.int64))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def read_rows(path: str, start: int, end: int, columns=tuple(SCHEMA.names)) -> list[dict]:
    """Rows [start, end) of a shard as documents, as read_table_rows."""
    return read_table_rows(path, start, end, columns).to_pylist()


def read_table_rows(path: str, start: int, end: int, columns=tuple(SCHEMA.names)) -> pa.Table:
    """Rows [start, end) of a shard with `columns`, reading only the row groups that hold
    them; a user's Parquet without id/source/meta gets them filled (documents.complete)."""
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    read = list(columns) if all(c in names for c in columns) else None  # None: all, for meta
    out, offset = [], 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset + n > start and offset < end:
            t = pf.read_row_group(g, columns=read)
            first = max(start, offset)
            t = t.slice(first - offset, min(end, offset + n) - first)
            out.append(complete(t, Path(path), first, tuple(columns)))
        offset += n
        if offset >= end:
            break
    if not out:
        return pa.Table.from_pylist([], schema=pa.schema([SCHEMA.field(c) for c in columns]))
    return pa.concat_tables(out)


def complete(table: pa.Table | pa.RecordBatch, path: Path, first_row: int, columns=("id", "text", "source", "meta")):
    """`table` (rows first_row.. of shard `path`) with `columns`; missing ones filled (see module doc)."""
    names = table.schema.names
    if all(c in names for c in columns):
        return table.select(list(columns))
    text = pc.fill_null(table.column("text"), "").to_pylist()
    rows = range(first_row, first_row + len(text))
    name = Path(path).name
    arrays = []
    for c in columns:
        if c in names:
            arr = table.column(c)
            arrays.append(pc.cast(arr, pa.string()) if c != "text" else pc.fill_null(arr, ""))
        elif c == "id":
            arrays.append(pa.array([doc_id(f"{name}:row:{r}", t) for r, t in zip(rows, text)], pa.string()))
        elif c == "source":
            arrays.append(pa.array([name] * len(text), pa.string()))
        elif c == "meta":
            other = [n for n in names if n not in SCHEMA.names]
            recs = table.select(other).to_pylist() if other else [{} for _ in text]
            arrays.append(pa.array([json.dumps({"path": f"{name}:row:{r}", **m}, default=str, ensure_ascii=False)
                                    for r, m in zip(rows, recs)], pa.string()))
        else:
            raise KeyError(c)
    make = pa.RecordBatch.from_arrays if isinstance(table, pa.RecordBatch) else pa.Table.from_arrays
    return make(arrays, names=list(columns))


def iter_batches(path: Path, columns=("id", "text", "source", "meta"), batch_size: int = 1024):
    """Batches (as tables) of one shard with `columns`, filled in where the file lacks them."""
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if "meta" in columns and "meta" not in names:
        have = None  # all columns: the other columns become meta
    else:
        have = [c for c in columns if c in names]
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=have):
        yield complete(batch, path, row, columns)
        row += batch.num_rows


def read_docs(folder: Path, columns: list[str] | None = None, batch_size: int = 1024) -> Iterator[dict]:
    """Stream documents from every shard in a folder, in order."""
    for path in shard_paths(folder):
        for batch in iter_batches(path, tuple(columns or SCHEMA.names), batch_size):
            yield from batch.to_pylist()


def write_docs(docs: Iterable[dict], out_dir: Path, shard_bytes: int = 64 << 20) -> list[Path]:
    w = ShardWriter(out_dir, shard_bytes)
    for d in docs:
        w.add(d)
    return w.close()
