"""Encode prepared documents to token shards, split into train and validation by document.

The split is a hash of the document id (itself a hash of source + path), so it is the
same on every run and machine, whatever the order or number of workers.

The corpus is cut, in read order, into chunks of about `chunk_bytes` of text (a chunk
ends after the document that reaches the size, sizes from the shards' metadata). Chunk N
becomes `train-N.bin` and `val-N.bin` (a split with no document in the chunk gets no
file). Chunks depend only on the corpus, so the shards are byte-identical whatever the
number of workers. Workers are processes (all cores) that read their own chunks (the
parent sends row ranges, not text); at most two chunks per worker are in flight, so
memory does not grow with the corpus. A finished chunk is appended to `progress.jsonl`; after a kill, a
rerun with the same inputs keeps the finished chunks and redoes the others.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from fmforge.data.documents import check_shards, iter_batches, read_table_rows, shard_paths, text_lengths
from fmforge.errors import DegenerateResult, UserError
from fmforge.progress import Progress
from fmforge.tokenizer.bpe import EOT, read_tokenizer_json
from fmforge.tokenizer.fast import Encoder
from fmforge.tokenizer.shards import dtype_for, write_arrays
from fmforge.workers import context

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SPLIT_BUCKETS = 1_000_000
PROGRESS = "progress.jsonl"
PLAN_VERSION = 2  # 2: chunks planned from the shards' metadata, read by the workers
SHARD_NAME = re.compile(r"^(train|val)-(\d{6})\.bin$")
CHECK_BYTES = 256 << 10  # corpus text checked fast-vs-HF before encoding


def is_validation(doc_id: str, val_fraction: float, seed: int = 0) -> bool:
    return xxhash.xxh64_intdigest(doc_id.encode(), seed=seed) % SPLIT_BUCKETS < val_fraction * SPLIT_BUCKETS


def split_counts(docs_dir: Path, val_fraction: float, seed: int = 0) -> tuple[int, int]:
    """(train documents, validation documents) of the split, reading only ids."""
    val = total = 0
    for path in shard_paths(docs_dir):
        for batch in iter_batches(path, ("id",) if "id" in pq.read_schema(path).names else ("id", "text"), 4096):
            ids = batch.column("id").to_pylist()
            total += len(ids)
            val += sum(is_validation(i, val_fraction, seed) for i in ids)
    return total - val, val


def check_split(docs_dir: Path, val_fraction: float, seed: int = 0) -> tuple[int, int]:
    """DegenerateResult when the split leaves no training or (val_fraction > 0) no
    validation document: the numbers, and data.val_fraction as the fix."""
    train, val = split_counts(docs_dir, val_fraction, seed)
    if not train + val:
        raise DegenerateResult(f"{docs_dir} holds no documents: run `fmforge data prepare` on a collected corpus")
    if not train or (val_fraction > 0 and not val):
        side = "training" if not train else "validation"
        raise DegenerateResult(
            f"the train/validation split of {train + val:,} documents with data.val_fraction={val_fraction:g} leaves "
            f"no {side} document ({train:,} train, {val:,} validation): "
            + ("lower data.val_fraction" if not train else "raise data.val_fraction (or set it to 0 to train without "
               "validation)") + ", or add documents")
    return train, val


@dataclass
class EncodeStats:
    train_docs: int = 0
    train_tokens: int = 0
    val_docs: int = 0
    val_tokens: int = 0
    bytes: int = 0
    chunks: int = 0
    encoder: str = ""  # "tiktoken" (fast, verified) or "hf"
    # wall seconds of the parent's phases, and CPU-seconds the workers spent per part of a
    # chunk (read, encode, write): where the time goes, for benchmarks/data_scaling.py
    phase_seconds: dict = None
    worker_seconds: dict = None

    def add(self, rec: dict) -> None:
        for k in ("train_docs", "train_tokens", "val_docs", "val_tokens", "bytes"):
            setattr(self, k, getattr(self, k) + rec[k])
        self.chunks += 1
        self.worker_seconds = self.worker_seconds or {}
        for k, v in rec.get("seconds", {}).items():
            self.worker_seconds[k] = round(self.worker_seconds.get(k, 0.0) + v, 3)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


# ------------------------------------------------------------------ reading


Piece = tuple[str, int, int, int]  # (shard, first row, end row, text bytes from the metadata)


def auto_chunk_bytes(docs_dir: Path) -> int:
    """About 256 chunks of the corpus, each 1 to 64 MiB: from its size alone, like the plan."""
    total = sum(int(text_lengths(pq.ParquetFile(p)).sum()) for p in shard_paths(docs_dir))
    return int(min(max(total // 256, 1 << 20), 64 << 20))


def plan_chunks(docs_dir: Path, chunk_bytes: int) -> list[list[Piece]]:
    """The corpus cut in read order into chunks of about `chunk_bytes` of text (a chunk
    ends after the document that reaches the size), each a list of row ranges of the
    shards. Sizes come from the shards' metadata (fmforge.data.documents.text_lengths), so
    the parent reads no text: each worker reads its own chunk. The plan depends on the
    corpus alone, never on the number of workers."""
    chunks: list[list[Piece]] = []
    cur: list[Piece] = []
    size = 0
    for path in shard_paths(docs_dir):
        cum = np.cumsum(text_lengths(pq.ParquetFile(path)), dtype=np.int64)
        start, n = 0, len(cum)
        while start < n:
            base = int(cum[start - 1]) if start else 0
            end = int(np.searchsorted(cum, base + chunk_bytes - size, side="left")) + 1
            if end > n:  # the shard ends inside this chunk
                cur.append((str(path), start, n, int(cum[-1]) - base))
                size += int(cum[-1]) - base
                break
            cur.append((str(path), start, end, int(cum[end - 1]) - base))
            chunks.append(cur)
            cur, size, start = [], 0, end
    if cur:
        chunks.append(cur)
    return chunks


def read_chunk(pieces: list[Piece], columns=("id", "text")) -> pa.Table:
    return pa.concat_tables([read_table_rows(p, a, b, columns) for p, a, b, _ in pieces])


def _piece_bytes(pieces: list[Piece]) -> list[int]:
    return [n for *_, n in pieces]


# ------------------------------------------------------------------ one chunk (in a worker)

_W: dict = {}


def _init_worker(tokenizer_json: str, fast: bool, out_dir: str, val_fraction: float, seed: int,
                 enc: Optional[Encoder] = None) -> None:
    enc = enc or Encoder(tokenizer_json, fast=fast, check=False)  # the parent checked it
    _W.update(enc=enc, out=Path(out_dir), val_fraction=val_fraction, seed=seed,
              eot=enc.token_to_id(EOT), vocab=enc.vocab_size)


def _init_pool_worker(*init) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already (HF fallback)
    _init_worker(*init)


def encode_chunk(index: int, chunk: list[Piece]) -> dict:
    """Read, encode and write one chunk's shards; returns the chunk's counts."""
    enc, out, eot, vocab = _W["enc"], _W["out"], _W["eot"], _W["vocab"]
    t0 = time.process_time()
    table = read_chunk(chunk)
    t1 = time.process_time()
    ids = table.column("id").to_pylist()
    texts = table.column("text").to_pylist()
    nbytes = pc.binary_length(table.column("text")).to_numpy(zero_copy_only=False).astype(np.uint64)
    val = np.fromiter((is_validation(i, _W["val_fraction"], _W["seed"]) for i in ids), bool, len(ids))
    encoded = list(enc.encode_arrays(texts, dtype_for(vocab)))
    del texts
    t2 = time.process_time()
    rec = {"chunk": index, "bytes": int(nbytes.sum())}
    for split, mask in (("train", ~val), ("val", val)):
        docs = [e for e, m in zip(encoded, mask) if m]
        rec[f"{split}_docs"], rec[f"{split}_tokens"] = len(docs), sum(len(d) + 1 for d in docs)
        if not docs:
            continue
        offsets = np.zeros(len(docs) + 1, dtype=np.uint64)
        np.cumsum([len(d) + 1 for d in docs], out=offsets[1:])
        tokens = np.empty(int(offsets[-1]), dtype=dtype_for(vocab))
        for d, o in zip(docs, offsets[:-1]):  # [EOT] + the document's ids
            tokens[o] = eot
            tokens[o + 1 : o + 1 + len(d)] = d
        path = out / f"{split}-{index:06d}.bin"
        write_arrays(path, tokens, offsets, nbytes[mask], vocab)
        rec.setdefault("files", {})[path.name] = path.stat().st_size
    rec["seconds"] = {"read": round(t1 - t0, 3), "encode": round(t2 - t1, 3), "write": round(time.process_time() - t2, 3)}
    return rec


# ------------------------------------------------------------------ resume


def plan_inputs(docs_dir: Path) -> list[list]:
    """[name, size, mtime_ns] of each document shard: the corpus as the plan records it."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in shard_paths(docs_dir)]


def plan(docs_dir: Path, tokenizer_fp: str, val_fraction: float, seed: int, chunk_bytes: int) -> dict:
    """Everything the shards depend on; a progress log with another plan is not resumed."""
    return {"version": PLAN_VERSION, "tokenizer": tokenizer_fp, "val_fraction": val_fraction, "seed": seed,
            "chunk_bytes": chunk_bytes, "inputs": plan_inputs(docs_dir)}


def finished_chunks(out_dir: Path, want: dict) -> dict[int, dict]:
    """Chunks recorded done by an earlier run of the same plan whose shards are all there
    with their recorded sizes (a torn last line of the log is ignored)."""
    log = out_dir / PROGRESS
    if not log.exists():
        return {}
    done: dict[int, dict] = {}
    lines = log.read_text().splitlines()
    try:
        if json.loads(lines[0]).get("plan") != want:
            return {}
    except (IndexError, json.JSONDecodeError):
        return {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break
        if all((out_dir / n).is_file() and (out_dir / n).stat().st_size == size
               for n, size in rec.get("files", {}).items()):
            done[rec["chunk"]] = rec
    return done


def clear_unfinished(out_dir: Path, done: dict[int, dict]) -> None:
    """Remove temp files and shards of chunks not recorded as done (a killed run's partial work)."""
    for p in out_dir.iterdir():
        m = SHARD_NAME.match(p.name)
        if (m and int(m.group(2)) not in done) or (p.name.startswith(".") and ".tmp-" in p.name):
            p.unlink()


# ------------------------------------------------------------------ the corpus


def encode_corpus(tok: Union[str, Path, "Tokenizer"], docs_dir: Path, out_dir: Path, val_fraction: float,
                  seed: int = 0, workers: int = 0, chunk_bytes: int | None = None, fast: bool = True,
                  verbose: bool = False, executor: str = "local", ray_address: str | None = None) -> EncodeStats:
    """Encode every document under `docs_dir` to shards in `out_dir`; resumes a killed run.

    `tok` is a HF `Tokenizer`, a tokenizer.json path or its folder. `workers=0`: every core.
    `executor="ray"`: chunks run as Ray tasks (on the cluster at `ray_address`, or a local
    Ray), `workers` at a time; every node must see `docs_dir` and `out_dir` at the same
    paths (a shared file system). The shards are the same as the local executor's.
    """
    out_dir = Path(out_dir)
    phases, clock = {}, [time.perf_counter()]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = round(now - clock[0], 3)
        clock[0] = now

    check_shards(docs_dir, "encode input")
    check_split(docs_dir, val_fraction, seed)  # before any output: a split without one side is no corpus
    phase("check_input")
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_json = tok.to_str() if hasattr(tok, "to_str") else read_tokenizer_json(tok)
    chunk_bytes = chunk_bytes or auto_chunk_bytes(docs_dir)
    chunks = plan_chunks(docs_dir, chunk_bytes)
    phase("plan")
    check = _prefix_texts(chunks[0], CHECK_BYTES) if chunks else []
    enc = Encoder(tok_json, fast=fast, check_texts=check)
    phase("encoder")
    if enc.token_to_id(EOT) is None:
        raise ValueError(f"the tokenizer has no document boundary token {EOT}")
    if enc.kind != "tiktoken" and verbose:
        print(f"[tokenizer] fast encoder not used ({enc.why_not}); encoding with HF tokenizers", file=sys.stderr)
    want = plan(docs_dir, enc.fingerprint, val_fraction, seed, chunk_bytes)
    done = finished_chunks(out_dir, want)
    clear_unfinished(out_dir, done)
    (out_dir / "stats.json").unlink(missing_ok=True)
    log = _open_log(out_dir, want, done)
    todo = iter([(i, c) for i, c in enumerate(chunks) if i not in done])  # _run takes a look ahead of it
    records = dict(done)
    init = (tok_json, enc.kind == "tiktoken", str(out_dir), val_fraction, seed)
    workers = workers or default_workers()
    left = [c for i, c in enumerate(chunks) if i not in done]
    bar = Progress("encode", len(left), sum(b for c in left for b in _piece_bytes(c)), unit="chunks", enabled=verbose)
    try:
        run = _run_ray(todo, workers, init, ray_address) if executor == "ray" else _run(todo, workers, init, enc)
        for rec in run:
            records[rec["chunk"]] = rec
            log.write(json.dumps(rec) + "\n")
            log.flush()
            os.fsync(log.fileno())
            bar.update(rec["bytes"], rec["train_docs"] + rec["val_docs"])
    finally:
        log.close()
    phase("chunks")
    stats = EncodeStats(encoder=enc.kind, phase_seconds=phases)
    for i in sorted(records):
        stats.add(records[i])
    tmp = out_dir / f".stats.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(stats.__dict__, indent=2))
    os.replace(tmp, out_dir / "stats.json")
    return stats


def _run(todo, workers: int, init: tuple, enc: Encoder) -> Iterator[dict]:
    """Encode chunks in this process (1 worker) or a pool, at most 2 per worker in flight."""
    if workers == 1:
        _init_worker(*init, enc=enc)
        for i, t in todo:
            yield encode_chunk(i, t)
        return
    # Starting a worker costs ~0.5 CPU-s (imports, encoder): worth it from 2 chunks each.
    ahead = [x for _, x in zip(range(2 * workers), todo)]
    procs = min(workers, len(ahead) // 2)
    if procs <= 1:
        yield from _run(chain(ahead, todo), 1, init, enc)
        return
    with ProcessPoolExecutor(procs, mp_context=context(["fmforge.tokenizer.encode"]),
                             initializer=_init_pool_worker, initargs=init) as pool:
        pending = set()
        try:
            for i, t in chain(ahead, todo):
                while len(pending) >= 2 * procs:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in finished)
                pending.add(pool.submit(encode_chunk, i, t))
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in finished)
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def _encode_on_ray(init: tuple, index: int, chunk: list[Piece]) -> dict:
    """One chunk in a Ray worker process; the encoder is built once per process."""
    if _W.get("init") != init:
        _init_pool_worker(*init)
        _W["init"] = init
    return encode_chunk(index, chunk)


def _run_ray(todo, workers: int, init: tuple, address: str | None) -> Iterator[dict]:
    """Chunks as Ray tasks, at most 2 per worker in flight; the order of results does not
    matter (each chunk writes its own shards, the log is keyed by chunk)."""
    try:
        import ray
    except ImportError as e:
        raise UserError("data.executor=ray needs the ray extra: pip install 'fmforge[ray]'") from e
    started = False
    if not ray.is_initialized():
        import fmforge

        root = str(Path(fmforge.__file__).resolve().parent.parent)  # workers import this checkout
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root, "TOKENIZERS_PARALLELISM": "false"}},
                 log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=2)(_encode_on_ray)  # a lost node's chunk runs again
        init_ref = ray.put(init)
        pending = []
        for i, c in todo:
            while len(pending) >= 2 * workers:
                finished, pending = ray.wait(pending, num_returns=1)
                yield from ray.get(finished)
            pending.append(task.remote(init_ref, i, c))
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            yield from ray.get(finished)
    finally:
        if started:
            ray.shutdown()


def _open_log(out_dir: Path, want: dict, done: dict[int, dict]):
    """Rewrite the progress log (plan + done chunks), then append to it."""
    tmp = out_dir / f".{PROGRESS}.tmp-{os.getpid()}"
    tmp.write_text("".join(json.dumps(x) + "\n" for x in [{"plan": want}, *(done[i] for i in sorted(done))]))
    os.replace(tmp, out_dir / PROGRESS)
    return open(out_dir / PROGRESS, "a")


def _prefix_texts(chunk: list[Piece], max_bytes: int) -> list[str]:
    """The first documents of the corpus, up to `max_bytes` of text: what the fast encoder
    is checked on against HF before encoding."""
    out, total = [], 0
    path, start, end, _ = chunk[0]
    for t in read_table_rows(path, start, min(end, start + 256), ("text",)).column("text").to_pylist():
        out.append(t[: max_bytes - total])
        total += len(out[-1])
        if total >= max_bytes:
            break
    return out
