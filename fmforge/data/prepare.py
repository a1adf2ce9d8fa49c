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
import pyarrow.parquet as pq

from fmforge.data.datacard import write_datacard
from fmforge.data.documents import check_shards, shard_paths
from fmforge.data.executors import run_tasks, worker_pool
from fmforge.data.reasons import field_of
from fmforge.data.stats import PrepareStats
from fmforge.data.tasks import WORK, plan_tasks, task_path
from fmforge.data.write import write_kept
from fmforge.errors import DegenerateResult
from fmforge.outputs import OutputDir

RUN_KEYS_IGNORED = ("workers", "executor", "ray_address", "strict", "sources", "include", "val_fraction", "split_seed",
                    "min_keep_fraction")
KIND = "data prepare"  # the kind of fmforge.outputs folder prepare writes


def _fingerprint(in_dir: Path, cfg) -> str:
    """What phase-1 results depend on: the recipe's data section (less settings that do not
    change the result), the input shards and the evaluation files."""
    from fmforge.data.decontam import expand

    dump = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RUN_KEYS_IGNORED}
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shard_paths(in_dir)]
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
            decontaminate: list[str] | None = None, strict: bool | None = None,
            progress: bool = False) -> PrepareStats:
    """Run every prepare stage from `in_dir` (collected shards, or any Parquet with a text
    column) to `out_dir` (kept shards, stats.json, datacard.md). Arguments override the
    recipe's data section; `progress` prints a progress line on stderr.

    Raises DataError for input without a text column and DegenerateResult when fewer than
    data.min_keep_fraction of the documents (or none) are kept; then no output is written
    and `out_dir/.work` stays, so a rerun with other thresholds redoes only what they change.
    Files in `out_dir` are removed only if an earlier prepare recorded writing them."""
    t0 = time.perf_counter()
    updates = {k: v for k, v in {"workers": workers, "executor": executor, "strict": strict,
                                  "decontaminate": decontaminate}.items() if v is not None}
    cfg = cfg.model_copy(update=updates)
    n_workers = cfg.workers or os.cpu_count() or 1
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    check_shards(in_dir, "prepare input")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stats.json").unlink(missing_ok=True)  # stats.json last = the output is complete
    phases, clock = {}, [time.perf_counter()]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = round(now - clock[0], 3)
        clock[0] = now

    work = _open_work(out_dir, in_dir, cfg)
    tasks = plan_tasks(in_dir)
    phase("plan")
    with worker_pool(min(n_workers, len(tasks))) as pool:
        run_tasks(tasks, cfg, work, n_workers, pool=pool, progress=progress)
        phase("tasks")
        task_files = [task_path(work, i) for i in range(len(tasks))]
        stats = PrepareStats(workers=n_workers)
        for f in task_files:
            stats.merge(PrepareStats.from_dict(json.loads(pq.read_schema(f).metadata[b"fmforge_stats"])))
        phase("merge_stats")
        removed = global_dedup(task_files, cfg, stats)
        phase("dedup")
        check_kept(stats, removed, cfg, in_dir)
        od = OutputDir(out_dir, KIND)
        _write_output(task_files, removed, out_dir, stats, od, pool)
        phase("write")
    stats.phase_seconds = phases
    stats.seconds = time.perf_counter() - t0
    tmp = out_dir / ".stats.json.tmp"
    tmp.write_text(json.dumps(stats.to_dict(), indent=2, ensure_ascii=False))
    od.record(["datacard.md", "stats.json"])
    write_datacard(stats, out_dir / "datacard.md", cfg)
    os.replace(tmp, out_dir / "stats.json")
    shutil.rmtree(work, ignore_errors=True)
    return stats


def check_kept(stats: PrepareStats, removed: dict, cfg, in_dir: Path) -> None:
    """DegenerateResult when prepare would keep none, or under data.min_keep_fraction, of
    its documents: the top removal reasons, each with the recipe field that governs it.
    `removed` is the global de-duplication's {row: (reason, row)}."""
    docs_in = stats.docs_in
    if not docs_in:
        raise DegenerateResult(f"prepare found no documents in {in_dir}: collect some first (`fmforge data collect`)")
    reasons = stats.removed.copy()
    reasons.update(r for r, _ in removed.values())
    kept = docs_in - sum(reasons.values())
    if kept > 0 and kept >= cfg.min_keep_fraction * docs_in:
        return
    top = "; ".join(f"{r} {n:,} docs → {field_of(r)}" for r, n in reasons.most_common(4))
    limit = f"under data.min_keep_fraction={cfg.min_keep_fraction:g}" if kept else "nothing to train on"
    raise DegenerateResult(
        f"prepare would keep {kept:,} of {docs_in:,} documents ({100 * kept / docs_in:.1f}%), {limit}. "
        f"Top removal reasons: {top}. Loosen those recipe fields (--set FIELD=VALUE), check that the input is "
        "the kind of text the rules are for" + (", or set data.min_keep_fraction=0 to accept a small share"
                                                if kept else ""))  # 0 kept fails at any share


def _write_output(task_files: list[Path], removed: dict, out_dir: Path, stats: PrepareStats, od: OutputDir,
                  pool=None) -> None:
    """Phase 3 (fmforge.data.write): kept documents into shards in a temp folder, in
    parallel, then renamed into out_dir in order; shards an earlier run recorded and this
    one did not write again are removed (only those)."""
    tmp_dir = out_dir / WORK / "final"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    written = write_kept(task_files, removed, tmp_dir, stats, pool)
    new = [f"docs-{k:05d}.parquet" for k in range(len(written))]
    od.record(new)  # first: a kill after a rename still leaves every file we wrote recorded
    for src, name in zip(written, new):
        os.replace(tmp_dir / src, out_dir / name)
    od.remove_stale(new + ["datacard.md", "stats.json"])
