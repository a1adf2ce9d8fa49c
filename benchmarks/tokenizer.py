"""Tokenizer benchmark on the shared pretrain data (books, Wikipedia, PEPs, Shakespeare: ~100 MB).

Measures, in one run on this machine:
  - training a 32k byte-level BPE (HF tokenizers) on the corpus: seconds and MB/s;
  - the baseline: a plain loop over `tokenizers.Tokenizer.encode_batch` on the documents,
    already in memory (nothing read or written is timed);
  - fmforge's `encode_corpus` end to end (read Parquet, split, encode, write shards to disk)
    with 1 and 2 worker processes, wall time and CPU seconds;
  - tiktoken built from the same merges, in memory, one thread (the encoder's raw speed);
  - that every document's ids in the shards equal the baseline's.
Writes benchmarks/results/tokenizer-<date>.json. Target (issue 5): end to end >= 2.5x baseline.

    .venv/bin/python benchmarks/tokenizer.py [--max-mb 20]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT.parent / "shared" / "data" / "pretrain"
SOURCES = ["books.jsonl.zst", "enwiki.jsonl.zst", "peps.tar.gz", "tinyshakespeare.txt"]


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed(fn):
    load, t, c = os.getloadavg()[0], time.perf_counter(), cpu_seconds()
    out = fn()
    return out, {"seconds": time.perf_counter() - t, "cpu_seconds": cpu_seconds() - c, "loadavg_before": load}


def prepare_corpus(work: Path, max_mb: float | None) -> Path:
    """The pretrain files as a prepared-documents Parquet folder (the encoder's input)."""
    from fmforge.data.collect import collect
    from fmforge.data.documents import read_docs, write_docs

    raw = work / "collected"
    collect([str(PRETRAIN / name) for name in SOURCES], ["*"], raw)
    if not max_mb:
        return raw
    docs, total = [], 0
    for i, d in enumerate(read_docs(raw)):  # every k-th document keeps both sources in a subset
        if i % 3 == 0:
            docs.append(d)
            total += len(d["text"].encode())
            if total >= max_mb * 1e6:
                break
    write_docs(docs, work / "subset")
    return work / "subset"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-mb", type=float, default=None, help="use a subset of about this many MB (quick check)")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/tokenizer-DATE.json)")
    args = ap.parse_args()
    header = provenance(args, peers=("tokenizers", "tiktoken"))
    if not (PRETRAIN / "books.jsonl.zst").exists():
        raise SystemExit(f"shared data not found at {PRETRAIN}")

    import tiktoken  # noqa: F401  (import cost outside the timings)

    from fmforge.config import TokenizerConfig
    from fmforge.data.documents import read_docs
    from fmforge.tokenizer.bpe import load, train_bpe
    from fmforge.tokenizer.encode import encode_corpus
    from fmforge.tokenizer.fast import Encoder
    from fmforge.tokenizer.sample import sample_docs
    from fmforge.tokenizer.shards import open_split

    work = Path(tempfile.mkdtemp(prefix="fmforge-tokbench-"))
    try:
        docs_dir = prepare_corpus(work, args.max_mb)
        texts = [d["text"] for d in read_docs(docs_dir, columns=["text"])]
        nbytes = sum(len(t.encode()) for t in texts)
        mb = nbytes / 1e6
        print(f"corpus: {len(texts)} documents, {mb:.1f} MB", flush=True)
        figures: dict = {"corpus": {"docs": len(texts), "mb": mb, "sources": SOURCES}}

        cfg = TokenizerConfig(vocab_size=args.vocab, sample_bytes=200_000_000)
        _, t = timed(lambda: train_bpe(sample_docs(docs_dir, cfg.sample_bytes), cfg, work / "tok"))
        figures["train"] = {"vocab": args.vocab, "sample_mb": mb, **t, "mb_per_s": mb / t["seconds"]}
        print("train", figures["train"], flush=True)

        tok = load(work / "tok")

        def baseline():
            out = []
            for i in range(0, len(texts), 256):
                out += tok.encode_batch(texts[i : i + 256], add_special_tokens=False)
            return out

        encs, t = timed(baseline)
        figures["hf_encode_batch"] = {**t, "mb_per_s": mb / t["seconds"], "threads": "rayon, all cores"}
        print("hf encode_batch", figures["hf_encode_batch"], flush=True)
        ref = [np.asarray(e.ids, dtype=np.uint32) for e in encs]
        del encs

        enc = Encoder.from_path(work / "tok")
        _, t = timed(lambda: [enc.tiktoken.encode_ordinary(x) for x in texts])
        figures["tiktoken_in_memory_1_thread"] = {**t, "mb_per_s": mb / t["seconds"]}
        print("tiktoken", figures["tiktoken_in_memory_1_thread"], flush=True)

        for workers in (2, 1):
            out = work / f"shards-{workers}"
            s, t = timed(lambda: encode_corpus(work / "tok", docs_dir, out, 0.05, 0, workers=workers))
            figures[f"fmforge_encode_{workers}_workers"] = {**t, "mb_per_s": mb / t["seconds"], "encoder": s.encoder,
                                                            "chunks": s.chunks, "tokens": s.train_tokens + s.val_tokens}
            print(f"fmforge {workers} workers", figures[f"fmforge_encode_{workers}_workers"], flush=True)

        # identity: each document's ids in the shards (after its boundary token) == the baseline's
        shards = {sp: [s.doc(i)[1:] for s in open_split(work / "shards-2", sp) for i in range(len(s))]
                  for sp in ("train", "val")}
        from fmforge.tokenizer.encode import is_validation

        ids = [d["id"] for d in read_docs(docs_dir, columns=["id"])]
        pos, mismatched = {"train": 0, "val": 0}, 0
        for doc_id, r in zip(ids, ref):
            sp = "val" if is_validation(doc_id, 0.05, 0) else "train"
            mismatched += not np.array_equal(shards[sp][pos[sp]], r)
            pos[sp] += 1
        same_bytes = all((work / "shards-1" / p.name).read_bytes() == p.read_bytes()
                         for p in (work / "shards-2").glob("*.bin"))
        base = figures["hf_encode_batch"]["mb_per_s"]
        e2e = figures["fmforge_encode_2_workers"]["mb_per_s"]
        figures["identical_ids"] = {"docs": len(ref), "mismatched_docs": mismatched,
                                    "shards_1_vs_2_workers_byte_identical": same_bytes}
        figures["speedup_end_to_end_vs_hf"] = e2e / base
        figures["scaling_2_vs_1_workers"] = e2e / figures["fmforge_encode_1_workers"]["mb_per_s"]
        figures["target"] = {"speedup_min": 2.5, "met": e2e / base >= 2.5 and mismatched == 0}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header["hardware"]["note"] = "2 cores shared with other sessions: load_avg_1m_before says how busy it was"
    path = write_result("tokenizer", header, {"figures": figures}, args.out)
    print(json.dumps(figures, indent=2))
    print(f"→ {path}")


if __name__ == "__main__":
    main()
