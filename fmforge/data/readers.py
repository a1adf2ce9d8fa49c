"""Readers for single files and dataset folders, one small function each behind one
interface: ``iter_*(path, stats, text_field, source, name) -> Iterator[doc]``: `source` is the
folder (or file) the user named, `name` the file's path relative to it; a document's
locator (meta.path, and with its content its id) is `name` plus line/row/member.

- JSONL (.jsonl, .jsonl.gz, .jsonl.zst, .ndjson): a ``text`` field (configurable), other
  fields kept as metadata; the Pile's format.
- Parquet (pyarrow); Hugging Face ``datasets`` folders written by ``save_to_disk``.
- WARC / WARC.gz (FastWARC): HTML responses to main text (Resiliparse), URL and date kept.
- tar / tar.gz archives of text files; single text files.

Each streams (constant memory, bounded by ``MAX_LINE_CHARS`` per record) and counts what
it cannot read with file and line (``stats.skip``) instead of crashing; in strict mode
``stats.skip`` raises instead.
"""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Iterator

from fmforge.data.documents import make_doc
from fmforge.data.formats import LANGUAGES, TEXT_SUFFIXES, DataError, format_of

MAX_LINE_CHARS = 64 << 20  # a longer JSONL record is skipped (and counted), not loaded


def open_binary(path: Path):
    name = path.name.lower()
    f = open(path, "rb")
    if name.endswith((".gz", ".tgz")):
        return gzip.GzipFile(fileobj=f)
    if name.endswith(".zst"):
        return ZstdReader(f)
    return f


class ZstdReader(io.RawIOBase):
    """Streaming zstd decompression that, unlike zstandard's stream_reader, notices a
    truncated last frame (EOFError) instead of ending quietly; reads across frames."""

    def __init__(self, f, chunk: int = 1 << 20):
        import zstandard

        self.f, self.chunk, self._new = f, chunk, zstandard.ZstdDecompressor().decompressobj
        self.d, self.buf, self.pos, self.done, self.in_frame = self._new(), b"", 0, False, False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self.pos >= len(self.buf) and not self.done:
            self.buf, self.pos = b"", 0
            data = self.f.read(self.chunk)
            if not data:
                if self.in_frame:
                    raise EOFError("zstd stream ends inside a frame (truncated file)")
                self.done = True
                break
            while data:
                self.in_frame = True
                self.buf += self.d.decompress(data)
                if self.d.eof:  # frame complete; what follows is the next frame
                    data, self.d, self.in_frame = self.d.unused_data, self._new(), False
                else:
                    data = b""
        n = min(len(b), len(self.buf) - self.pos)
        b[:n] = self.buf[self.pos : self.pos + n]
        self.pos += n
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def open_text(path: Path) -> io.TextIOBase:
    return io.TextIOWrapper(io.BufferedReader(open_binary(path)), encoding="utf-8", errors="surrogateescape",
                            newline="\n")


def valid_utf8(text: str, stats, where: str) -> str:
    """Text decoded with surrogateescape: replace undecodable bytes with U+FFFD, counted."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        stats.skip("invalid_utf8_replaced", where)
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _where(path: Path, source, name) -> tuple[str, str]:
    return (str(path.parent) if source is None else str(source)), (path.name if name is None else name)


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def _why_no_text(obj, text_field: str) -> str:
    """What is wrong with a JSONL record that gave no text, in the user's (JSON's) terms."""
    if not isinstance(obj, dict):
        return f"the record is {_JSON_TYPES[type(obj)]}, not an object"
    if text_field not in obj:
        return f"no field '{text_field}'"
    return f"field '{text_field}' is {_JSON_TYPES[type(obj[text_field])]}, not a string"


def _no_text_field(path: Path, text_field: str, kind: str, seen) -> DataError:
    return DataError(f"{path}: no {kind} has a text field '{text_field}' ({kind} fields: "
                     f"{', '.join(sorted(seen)) or 'none'}); name the field holding the text with "
                     "--text-field FIELD (recipe: data.text_field)")


def iter_jsonl(path: Path, stats, text_field: str = "text", source=None, name=None) -> Iterator[dict]:
    source, name = _where(path, source, name)
    keys: set[str] = set()
    records = with_text = 0
    with open_text(path) as f:
        lineno = 0
        while True:
            try:
                line = f.readline(MAX_LINE_CHARS)
            except Exception as e:  # truncated or corrupt .gz/.zst stream
                stats.skip("truncated_file", f"{path}: after line {lineno}: {type(e).__name__}: {e}")
                break
            if not line:
                break
            lineno += 1
            if len(line) >= MAX_LINE_CHARS and not line.endswith("\n"):
                stats.skip("line_too_long", f"{path}:{lineno}: over {MAX_LINE_CHARS:,} characters")
                try:
                    while (rest := f.readline(MAX_LINE_CHARS)) and not rest.endswith("\n"):
                        pass
                except Exception as e:
                    stats.skip("truncated_file", f"{path}: after line {lineno}: {type(e).__name__}: {e}")
                    break
                continue
            if not line.strip():
                continue
            line = valid_utf8(line, stats, f"{path}:{lineno}")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                stats.skip("malformed_json", f"{path}:{lineno}: {e.msg} (column {e.colno})")  # msg alone can end in "at"
                continue
            records += 1
            text = obj.get(text_field) if isinstance(obj, dict) else None
            if isinstance(obj, dict) and len(keys) < 50:
                keys.update(obj)
            if not isinstance(text, str):
                if stats.strict and not with_text and text_field not in keys:
                    raise _no_text_field(path, text_field, "record", keys)  # the likelier cause than one bad record
                stats.skip("missing_text", f"{path}:{lineno}: {_why_no_text(obj, text_field)}")
                continue
            with_text += 1
            meta = {k: v for k, v in obj.items() if k != text_field}
            yield make_doc(text, source, f"{name}:line:{lineno}", **meta)
    if records and not with_text:  # not one record has the field: a wrong field name, not bad records
        raise _no_text_field(path, text_field, "record", keys)


def _iter_table_batches(batches, source: str, stats, text_field: str, name: str) -> Iterator[dict]:
    row = 0
    for batch in batches:
        for rec in batch.to_pylist():
            row += 1
            text = rec.get(text_field)
            if not isinstance(text, str):
                stats.skip("missing_text", f"{source}/{name}: row {row}: field '{text_field}' is not a string")
                continue
            meta = {k: v for k, v in rec.items() if k != text_field}
            yield make_doc(text, source, f"{name}:row:{row}", **json.loads(json.dumps(meta, default=str)))


def _need_column(path: Path, schema, text_field: str) -> None:
    if text_field not in schema.names:
        raise DataError(f"{path}: no column '{text_field}' (columns: {', '.join(schema.names) or 'none'}); "
                        "name the column holding the text with --text-field COLUMN (recipe: data.text_field)")


def iter_parquet(path: Path, stats, text_field: str = "text", source=None, name=None) -> Iterator[dict]:
    import pyarrow.parquet as pq

    source, name = _where(path, source, name)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as e:  # pyarrow raises ArrowInvalid (a ValueError) on corrupt files
        stats.skip("corrupt_file", f"{path}: {type(e).__name__}: {e}")
        return
    _need_column(path, pf.schema_arrow, text_field)
    try:
        yield from _iter_table_batches(pf.iter_batches(batch_size=256), source, stats, text_field, name)
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        stats.skip("corrupt_file", f"{path}: {type(e).__name__}: {e}")


def is_hf_dataset(folder: Path) -> bool:
    return (folder / "state.json").exists() or (folder / "dataset_dict.json").exists()


def iter_hf_dataset(folder: Path, stats, text_field: str = "text", source=None, name=None) -> Iterator[dict]:
    """A `datasets` save_to_disk folder: Arrow stream files listed in state.json (a
    DatasetDict folder holds one such folder per split)."""
    import pyarrow as pa

    source = str(folder) if source is None else source
    prefix = "" if name is None else f"{name}/"
    if (folder / "dataset_dict.json").exists():
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        for split in splits:
            yield from iter_hf_dataset(folder / split, stats, text_field, source, f"{prefix}{split}")
        return
    state = json.loads((folder / "state.json").read_text())
    for entry in state.get("_data_files", []):
        path = folder / entry["filename"]
        try:
            src = pa.memory_map(str(path))
            reader = pa.ipc.open_stream(src)
        except (OSError, ValueError) as e:
            stats.skip("corrupt_file", f"{path}: {type(e).__name__}: {e}")
            continue
        with src:
            _need_column(path, reader.schema, text_field)
            try:
                yield from _iter_table_batches(reader, source, stats, text_field, f"{prefix}{entry['filename']}")
            except (OSError, ValueError) as e:
                if isinstance(e, DataError):
                    raise
                stats.skip("corrupt_file", f"{path}: {type(e).__name__}: {e}")


def iter_warc(path: Path, stats, text_field: str = "text", source=None, name=None) -> Iterator[dict]:
    """Text records of a WARC file as main text (fmforge.data.warc)."""
    from fmforge.data.warc import iter_warc_records

    source, name = _where(path, source, name)
    yield from iter_warc_records(path, stats, source, name, getattr(stats, "html_extractor", "resiliparse"))


def iter_tar(path: Path, stats, text_field: str = "text", source=None, name=None) -> Iterator[dict]:
    source, name = _where(path, source, name)
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                suffix = Path(member.name).suffix.lower()
                if suffix not in LANGUAGES and suffix not in TEXT_SUFFIXES:
                    stats.skip("not_text", f"{path}:{member.name}")
                    continue
                raw = tar.extractfile(member).read()
                text = decode_file(raw, f"{path}:{member.name}", stats)
                if text is not None:
                    yield make_doc(text, source, f"{name}:{member.name}", language=LANGUAGES.get(suffix, "text"))
    except (tarfile.TarError, OSError, EOFError) as e:
        stats.skip("truncated_file", f"{path}: {type(e).__name__}: {e}")


def decode_file(raw: bytes, where: str, stats) -> str | None:
    if b"\0" in raw[:8192]:
        stats.skip("binary", where)
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        stats.skip("invalid_utf8", f"{where}: byte {e.start}")
        return None


def iter_text_file(path: Path, stats, text_field: str = "text", source=None, name=None) -> Iterator[dict]:
    """A text or code file (any other format); binary or non-UTF-8 content is skipped and counted."""
    source, name = _where(path, source, name)
    try:
        raw = path.read_bytes()
    except OSError as e:
        stats.skip("unreadable", f"{path}: {e.strerror}")
        return
    text = decode_file(raw, str(path), stats)
    if text is not None:
        yield make_doc(text, source, name, language=LANGUAGES.get(path.suffix.lower(), "text"))


READERS = {"jsonl": iter_jsonl, "parquet": iter_parquet, "warc": iter_warc, "tar": iter_tar, "text": iter_text_file}


def iter_file(path: Path, stats, text_field: str = "text", source=None, name=None) -> Iterator[dict]:
    """One file by its format (fmforge.data.formats.format_of), given directly or met in a folder."""
    try:
        yield from READERS[format_of(path.name)](path, stats, text_field, source, name)
    except PermissionError as e:
        stats.skip("unreadable", f"{path}: {e.strerror}")
