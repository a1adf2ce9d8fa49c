"""Prepare: clean, filter, redact, decontaminate and de-duplicate the collected documents.

Three phases:
1. tasks (row ranges of the input shards) run the per-document stages (fmforge.data.stages)
   in parallel: local processes or Ray (fmforge.data.executors); each task writes one
   Parquet file of survivors with their exact-dedup hash and MinHash signature into
   ``OUT/.work/`` by temp-file-and-rename, so a killed run redoes only unfinished tasks;
2. global de-duplication over every task's hashes and signatures (exact, then MinHash
   LSH + union-find): one document per cluster, the first in input order;
3. the kept documents are written as shards to a temp folder and renamed into ``OUT``,
   then ``stats.json`` and ``datacard.md``. The result is the same for any number of
   workers and for a killed-then-resumed run as for a clean one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fmforge.data.datacard import write_datacard
from fmforge.data.documents import SCHEMA, ShardWriter, shard_paths
from fmforge.data.stats import PrepareStats, length_bucket, utf8_len, where

WORK = ".work"
TASK_SCHEMA = pa.schema(list(SCHEMA) + [("lang", pa.string()), ("exact", pa.uint64()), ("sig", pa.binary())])
RUN_KEYS_IGNORED = ("workers", "executor", "ray_address", "strict", "sources", "include", "val_fraction", "split_seed")


def plan_tasks(in_dir: Path, workers: int) -> list[tuple[str, int, int]]:
    """(shard, first row, end row) ranges: about 8 tasks per worker, 16-2000 documents each."""
    shards = [(str(p), pq.ParquetFile(p).metadata.num_rows) for p in shard_paths(in_dir)]
    total = sum(n for _, n in shards)
    per = int(min(2000, max(16, -(-total // max(1, workers * 8)))))
    return [(p, a, min(a + per, n)) for p, n in shards for a in range(0, n, per)]


def read_rows(path: str, start: int, end: int) -> list[dict]:
    """Rows [start, end) of a shard, reading only the row groups that hold them."""
    pf = pq.ParquetFile(path)
    out, offset = [], 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset + n > start and offset < end:
            t = pf.read_row_group(g, columns=["id", "text", "source", "meta"])
            out += t.slice(max(0, start - offset), min(end, offset + n) - max(start, offset)).to_pylist()
        offset += n
        if offset >= end:
            break
    return out


def task_path(work: Path, i: int) -> Path:
    return work / f"task-{i:06d}.parquet"


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


def _fingerprint(in_dir: Path, cfg) -> str:
    """What phase-1 results depend on: the recipe's data section (less settings that do not
    change the result), the input shards and the evaluation files."""
    from fmforge.data.decontam import expand

    dump = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RUN_KEYS_IGNORED}
    files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in shard_paths(in_dir)]
    evals = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in expand(cfg.decontaminate)]
    return hashlib.sha256(json.dumps([dump, files, evals], sort_keys=True).encode()).hexdigest()[:16]


def _open_work(out_dir: Path, in_dir: Path, cfg) -> Path:
    work = out_dir / WORK
    fp = _fingerprint(in_dir, cfg)
    marker = work / "fingerprint"
    if work.exists() and (not marker.exists() or marker.read_text() != fp):
        shutil.rmtree(work)  # results of another recipe or input: start over
    work.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        if cfg.decontaminate:
            from fmforge.data.decontam import build_index

            idx = build_index(cfg.decontaminate, cfg.decontam_ngram)
            np.save(work / ".eval-index.tmp.npy", idx)
            os.replace(work / ".eval-index.tmp.npy", work / "eval-index.npy")
        marker.write_text(fp)
    return work


def global_dedup(task_files: list[Path], cfg, stats: PrepareStats) -> dict[int, tuple[str, int]]:
    """Phase 2: {global row: (reason, row it duplicates)} over every task's survivors."""
    from fmforge.data.minhash import near_duplicates

    exact_parts, sig_parts = [], []
    for f in task_files:
        t = pq.read_table(f, columns=["exact", "sig"])
        exact_parts.append(t.column("exact").to_numpy())
        if cfg.near_dedup.enabled and t.num_rows:
            buf = b"".join(t.column("sig").to_pylist())
            sig_parts.append(np.frombuffer(buf, dtype=np.uint32).reshape(t.num_rows, -1))
    exact = np.concatenate(exact_parts) if exact_parts else np.zeros(0, np.uint64)
    removed: dict[int, tuple[str, int]] = {}
    if cfg.dedup_exact and len(exact):
        _, first, inverse = np.unique(exact, return_index=True, return_inverse=True)
        for i in np.nonzero(first[inverse] != np.arange(len(exact)))[0].tolist():
            removed[i] = ("exact_duplicate", int(first[inverse[i]]))
    if cfg.near_dedup.enabled and sig_parts:
        sigs = np.concatenate(sig_parts)
        alive = np.array([i for i in range(len(sigs)) if i not in removed], dtype=np.int64)
        nd = cfg.near_dedup
        for local, root in near_duplicates(sigs[alive], nd.bands, nd.rows, nd.verify).items():
            removed[int(alive[local])] = ("near_duplicate", int(alive[root]))
    return removed


def prepare(in_dir: Path, out_dir: Path, cfg, workers: int | None = None, executor: str | None = None,
            decontaminate: list[str] | None = None, strict: bool | None = None) -> PrepareStats:
    """Run every prepare stage from `in_dir` (collected shards) to `out_dir` (kept shards,
    stats.json, datacard.md). Arguments override the recipe's data section."""
    from fmforge.data.executors import run_tasks

    t0 = time.perf_counter()
    updates = {k: v for k, v in {"workers": workers, "executor": executor, "strict": strict,
                                  "decontaminate": decontaminate}.items() if v is not None}
    cfg = cfg.model_copy(update=updates)
    n_workers = cfg.workers or os.cpu_count() or 1
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stats.json").unlink(missing_ok=True)  # stats.json last = the output is complete
    work = _open_work(out_dir, in_dir, cfg)
    tasks = plan_tasks(in_dir, n_workers)
    run_tasks(tasks, cfg, work, n_workers)

    task_files = [task_path(work, i) for i in range(len(tasks))]
    stats = PrepareStats(workers=n_workers)
    for f in task_files:
        stats.merge(PrepareStats.from_dict(json.loads(pq.read_schema(f).metadata[b"fmforge_stats"])))
    removed = global_dedup(task_files, cfg, stats)
    _write_output(task_files, removed, out_dir, stats)
    stats.seconds = time.perf_counter() - t0
    tmp = out_dir / ".stats.json.tmp"
    tmp.write_text(json.dumps(stats.to_dict(), indent=2, ensure_ascii=False))
    write_datacard(stats, out_dir / "datacard.md", cfg)
    os.replace(tmp, out_dir / "stats.json")
    shutil.rmtree(work, ignore_errors=True)
    return stats


def _write_output(task_files: list[Path], removed: dict, out_dir: Path, stats: PrepareStats) -> None:
    """Phase 3: kept documents into shards in a temp folder, then renamed into out_dir."""
    tmp_dir = out_dir / WORK / "final"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    writer = ShardWriter(tmp_dir)
    need = {dup for _, dup in removed.values()}  # rows that others duplicate (always earlier rows)
    where_of: dict[int, str] = {}
    docs = {"in": [0, 0], "exact": [0, 0], "out": [0, 0]}  # [docs, bytes] before/after each dedup
    row = 0
    for f in task_files:
        for d in pq.read_table(f).to_pylist():
            if row in need:
                where_of[row] = where(d)
            r = removed.get(row)
            n = utf8_len(d["text"])
            for key, counted in (("in", True), ("exact", r is None or r[0] != "exact_duplicate"), ("out", r is None)):
                if counted:
                    docs[key][0] += 1
                    docs[key][1] += n
            if r is None:
                writer.add({k: d[k] for k in ("id", "text", "source", "meta")})
                stats.languages_out[d["lang"]] += 1
                stats.lengths_out[length_bucket(n)] += 1
            else:
                stats.drop(r[0], d, d["text"], f"duplicate of {where_of.get(r[1], f'row {r[1]}')}")
            row += 1
    stats.stage("exact_dedup", *docs["in"], *docs["exact"])
    stats.stage("near_dedup", *docs["exact"], *docs["out"])
    stats.docs_out, stats.bytes_out = docs["out"]
    writer.close()
    for old in shard_paths(out_dir):
        old.unlink()
    for p in sorted(tmp_dir.glob("*.parquet")):
        os.replace(p, out_dir / p.name)
