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

from fmforge.data.documents import SCHEMA, read_rows, shard_paths, text_lengths

WORK = ".work"
TASK_SCHEMA = pa.schema(list(SCHEMA) + [("lang", pa.string()), ("exact", pa.uint64()), ("sig", pa.binary())])


TASK_BYTES = 2 << 20  # text per task: small enough that a 16-worker run has no straggler
TASK_DOCS = 2000  # and at most this many documents (per-task overhead stays small)


def plan_tasks(in_dir: Path) -> list[tuple[str, int, int, int]]:
    """(shard, first row, end row, text bytes) ranges of about TASK_BYTES of text each (a task ends
    after the document that reaches the size), cut in input order.

    The plan depends on the input alone, not on the number of workers, so a run resumed
    with another worker count reuses the finished tasks of the same plan. Sizes come from
    the Parquet metadata where a row group is small (its rows taken as equal), and from
    the text lengths where it is larger than a task: a few books among many web pages are
    then spread over many tasks instead of making one task that outlasts all the others."""
    tasks = []
    for p in shard_paths(in_dir):
        lengths = text_lengths(pq.ParquetFile(p))
        cum = np.cumsum(lengths, dtype=np.int64)
        start, n = 0, len(lengths)
        while start < n:
            base = int(cum[start - 1]) if start else 0
            end = int(np.searchsorted(cum, base + TASK_BYTES, side="left")) + 1  # include the doc reaching it
            end = min(end, start + TASK_DOCS, n)
            tasks.append((str(p), start, end, int(cum[end - 1]) - base))
            start = end
    return tasks


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
    kept, stats = stages.run(read_rows(*task[:3]))
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
