"""Prepare's phase 3: the kept documents of every task, written as the output shards.

Consecutive tasks are grouped into shards of about SHARD_BYTES of surviving text (sizes
from the task files' metadata), and each group is written by a worker: it drops the rows
the global de-duplication removed and writes one shard to a temp folder. Groups depend on
the task files alone, which depend on the input alone, so the shards are the same for any
number of workers. The parent then renames them into place, in order.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fmforge.data.documents import SCHEMA, write_table_shard
from fmforge.data.stats import PrepareStats, length_bucket, where

SHARD_BYTES = 64 << 20


def plan_groups(task_files: list[Path]) -> list[list[int]]:
    """Task indices per output shard: consecutive tasks up to about SHARD_BYTES of text."""
    groups, cur, size = [], [], 0
    for i, f in enumerate(task_files):
        meta = pq.ParquetFile(f).metadata
        col = meta.schema.to_arrow_schema().get_field_index("text")
        size += sum(meta.row_group(g).column(col).total_uncompressed_size for g in range(meta.num_row_groups))
        cur.append(i)
        if size >= SHARD_BYTES:
            groups.append(cur)
            cur, size = [], 0
    if cur:
        groups.append(cur)
    return groups


def write_group(index: int, files: list[str], first_row: int, removed: dict[int, tuple[str, str]],
                tmp_dir: str) -> dict:
    """Write one output shard (runs in a worker). `removed`: {global row: (reason, detail)}
    for this group's rows. Returns the file name (None when nothing survived), partial
    stats and [docs, bytes] counts before/after each de-duplication."""
    stats = PrepareStats()
    counts = {"in": [0, 0], "exact": [0, 0], "out": [0, 0]}
    parts = []
    row = first_row
    for f in files:
        t = pq.read_table(f)
        n = t.num_rows
        if not n:
            continue
        nbytes = pc.binary_length(t.column("text")).to_numpy(zero_copy_only=False).astype(np.int64)
        gone = np.zeros(n, dtype=bool)
        exact_gone = np.zeros(n, dtype=bool)
        for r, (reason, _) in removed.items():
            if row <= r < row + n:
                gone[r - row] = True
                exact_gone[r - row] = reason == "exact_duplicate"
        for key, mask in (("in", np.ones(n, bool)), ("exact", ~exact_gone), ("out", ~gone)):
            counts[key][0] += int(mask.sum())
            counts[key][1] += int(nbytes[mask].sum())
        if gone.any():  # the removed ones, in order, for the card's examples
            rows = t.filter(pa.array(gone)).to_pylist()
            for local, d in zip(np.nonzero(gone)[0].tolist(), rows):
                reason, detail = removed[row + local]
                stats.drop(reason, d, d["text"], detail)
        keep = t.filter(pa.array(~gone))
        stats.languages_out.update(Counter(keep.column("lang").to_pylist()))
        stats.lengths_out.update(Counter(length_bucket(int(b)) for b in nbytes[~gone]))
        parts.append(keep.select(SCHEMA.names))
        row += n
    name = None
    kept = pa.concat_tables(parts).cast(SCHEMA) if parts else None
    if kept is not None and kept.num_rows:
        name = f"group-{index:06d}.parquet"
        write_table_shard(kept, Path(tmp_dir) / name)
    return {"name": name, "stats": stats.to_dict(), "counts": counts}


def duplicate_details(task_files: list[Path], offsets: list[int], removed: dict) -> dict[int, tuple[str, str]]:
    """{row: (reason, "duplicate of <where the kept copy came from>")}: reads only the
    source/meta/id columns of the task files that hold a kept copy."""
    need = sorted({dup for _, dup in removed.values()})
    where_of: dict[int, str] = {}
    for i, f in enumerate(task_files):
        lo, hi = offsets[i], offsets[i + 1]
        mine = [r for r in need if lo <= r < hi]
        if not mine:
            continue
        t = pq.read_table(f, columns=["id", "source", "meta"])
        for r in mine:
            where_of[r] = where({k: t.column(k)[r - lo].as_py() for k in ("id", "source", "meta")})
    return {r: (reason, f"duplicate of {where_of.get(dup, f'row {dup}')}") for r, (reason, dup) in removed.items()}


def write_kept(task_files: list[Path], removed: dict, tmp_dir: Path, stats: PrepareStats, pool=None) -> list[str]:
    """Phase 3 into `tmp_dir`; returns the shard names written there, in order (renamed
    `docs-NNNNN.parquet` by the caller's order). Merges the groups' stats into `stats`."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    rows = [pq.ParquetFile(f).metadata.num_rows for f in task_files]
    offsets = [0, *np.cumsum(rows).tolist()]
    detail = duplicate_details(task_files, offsets, removed)
    jobs = []
    for j, group in enumerate(plan_groups(task_files)):
        lo, hi = offsets[group[0]], offsets[group[-1] + 1]
        mine = {r: v for r, v in detail.items() if lo <= r < hi}
        jobs.append((j, [str(task_files[i]) for i in group], lo, mine, str(tmp_dir)))
    if pool is None or len(jobs) <= 1:
        results = [write_group(*job) for job in jobs]
    else:
        results = [f.result() for f in [pool.submit(write_group, *job) for job in jobs]]
    totals = {"in": [0, 0], "exact": [0, 0], "out": [0, 0]}
    names = []
    for res in results:  # in order: the card's first examples are the input's first
        stats.merge(PrepareStats.from_dict(res["stats"]))
        for k in totals:
            totals[k][0] += res["counts"][k][0]
            totals[k][1] += res["counts"][k][1]
        if res["name"]:
            names.append(res["name"])
    stats.stage("exact_dedup", *totals["in"], *totals["exact"], totals["in"][1] - totals["exact"][1])
    stats.stage("near_dedup", *totals["exact"], *totals["out"], totals["exact"][1] - totals["out"][1])
    stats.docs_out, stats.bytes_out = totals["out"]
    return names
