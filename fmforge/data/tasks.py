"""Prepare's phase-1 tasks: row ranges of the input shards, each run through the
per-document stages into one Parquet file of survivors in ``OUT/.work/``.

Its own module so that both fmforge.data.prepare (which plans and merges) and
fmforge.data.executors (which runs tasks, in processes or on Ray) import it, and
neither imports the other.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fmforge.data.documents import SCHEMA, complete, shard_paths

WORK = ".work"
TASK_SCHEMA = pa.schema(list(SCHEMA) + [("lang", pa.string()), ("exact", pa.uint64()), ("sig", pa.binary())])


def plan_tasks(in_dir: Path, workers: int) -> list[tuple[str, int, int]]:
    """(shard, first row, end row) ranges: about 8 tasks per worker, 16-2000 documents each."""
    shards = [(str(p), pq.ParquetFile(p).metadata.num_rows) for p in shard_paths(in_dir)]
    total = sum(n for _, n in shards)
    per = int(min(2000, max(16, -(-total // max(1, workers * 8)))))
    return [(p, a, min(a + per, n)) for p, n in shards for a in range(0, n, per)]


def read_rows(path: str, start: int, end: int) -> list[dict]:
    """Rows [start, end) of a shard as documents, reading only the row groups that hold
    them; a user's Parquet without id/source/meta gets them filled (documents.complete)."""
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    columns = list(SCHEMA.names) if all(c in names for c in SCHEMA.names) else None  # None: all, for meta
    out, offset = [], 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset + n > start and offset < end:
            t = pf.read_row_group(g, columns=columns)
            first = max(start, offset)
            t = t.slice(first - offset, min(end, offset + n) - first)
            out += complete(t, Path(path), first).to_pylist()
        offset += n
        if offset >= end:
            break
    return out


def task_path(work: Path, i: int) -> Path:
    return Path(work) / f"task-{i:06d}.parquet"


def run_task(i: int, task: tuple[str, int, int], cfg_json: str, work: str, strict: bool) -> str:
    """Phase 1 for one task (runs in a worker process). Idempotent: a finished task is
    not redone."""
    from fmforge.config import DataConfig
    from fmforge.data.stages import Stages

    out = task_path(Path(work), i)
    if out.exists():
        return str(out)
    cfg = DataConfig.model_validate_json(cfg_json)
    stages = Stages(cfg, _eval_index(work), strict)
    kept, stats = stages.run(read_rows(*task))
    table = pa.Table.from_pylist(
        [{**k.doc, "lang": k.lang, "exact": k.exact, "sig": k.sig.tobytes()} for k in kept], schema=TASK_SCHEMA)
    table = table.replace_schema_metadata({"fmforge_stats": json.dumps(stats.to_dict())})
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out)
    return str(out)


_EVAL_CACHE: dict[str, np.ndarray] = {}


def _eval_index(work: str) -> np.ndarray | None:
    p = Path(work) / "eval-index.npy"
    if not p.exists():
        return None
    if work not in _EVAL_CACHE:
        _EVAL_CACHE[work] = np.load(p)
    return _EVAL_CACHE[work]
