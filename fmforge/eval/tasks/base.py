"""What every task family shares: an item (the requests to score and the gold answer), a
reader of task files that names the file, line and field of a bad row, and where the
default task files live."""
from __future__ import annotations

import gzip
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from fmforge.errors import InputNotFound, UserError


class TaskError(UserError):
    """A task file that cannot be read; the message names the file, line and field."""


@dataclass
class Item:
    """One question. `requests` are (context, continuation) pairs scored by log-likelihood:
    one per choice for multiple choice, one in all for a greedy-match task (LAMBADA).
    `choices` are the texts whose character lengths normalise acc_norm (lm-eval's
    completion_len: the choice without the leading space)."""

    requests: list[tuple[str, str]]
    gold: int
    choices: list[str]
    meta: dict = field(default_factory=dict)


def open_maybe_gz(path: Path) -> io.TextIOBase:
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"task file not found: {path}")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    if path.suffix == ".zst":
        import zstandard

        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSONL(.gz/.zst) file; blank lines skipped."""
    with open_maybe_gz(path) as f:
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskError(f"{path}:{n}: not a JSON object ({e.msg})") from None
                if not isinstance(row, dict):
                    raise TaskError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                yield n, row
        except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
            raise TaskError(f"{path}: unreadable ({e})") from None


def need(row: dict, key: str, kind, path: Path, n: int):
    """row[key], checked to be of `kind` (a type or tuple of types)."""
    if key not in row:
        raise TaskError(f"{path}:{n}: field {key!r} is missing")
    v = row[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is int:
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise TaskError(f"{path}:{n}: field {key!r} should be {want}, got {type(v).__name__}")
    return v


def need_gold(row: dict, key: str, n_choices: int, path: Path, n: int) -> int:
    """The gold choice's index: an integer, or a string of digits (HellaSwag's label on the
    Hugging Face hub is "0".."3")."""
    v = row.get(key)
    if isinstance(v, str) and not re.fullmatch(r"[0-9]+", v):
        raise TaskError(f"{path}:{n}: field {key!r} should be an integer or a string of digits, got {v!r}")
    g = int(v) if isinstance(v, str) else need(row, key, int, path, n)
    if not 0 <= g < n_choices:
        raise TaskError(f"{path}:{n}: field {key!r} is {g}, outside 0..{n_choices - 1}")
    return g


def need_strings(row: dict, key: str, path: Path, n: int, min_len: int = 1) -> list[str]:
    v = need(row, key, list, path, n)
    if len(v) < min_len or not all(isinstance(x, str) for x in v):
        raise TaskError(f"{path}:{n}: field {key!r} should be a list of at least {min_len} strings")
    return v


def data_root() -> Path | None:
    """Where default task files are: $FMFORGE_EVAL_DATA, else a `shared/data/eval` folder in
    or beside the working directory (this project's layout), else None."""
    env = os.environ.get("FMFORGE_EVAL_DATA")
    if env:
        return Path(env)
    for c in (Path("shared/data/eval"), Path("../shared/data/eval")):
        if c.is_dir():
            return c
    return None
