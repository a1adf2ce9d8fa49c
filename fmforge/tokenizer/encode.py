"""Encode prepared documents to token shards, split into train and validation by document.

The split is a hash of the document id (itself a hash of source + path), so it is the
same on every run and machine, whatever the order or number of workers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from fmforge.data.documents import read_docs
from fmforge.tokenizer.bpe import EOT
from fmforge.tokenizer.shards import write_shard

SPLIT_BUCKETS = 1_000_000


def is_validation(doc_id: str, val_fraction: float, seed: int = 0) -> bool:
    return xxhash.xxh64_intdigest(doc_id.encode(), seed=seed) % SPLIT_BUCKETS < val_fraction * SPLIT_BUCKETS


@dataclass
class EncodeStats:
    train_docs: int = 0
    train_tokens: int = 0
    val_docs: int = 0
    val_tokens: int = 0
    bytes: int = 0


def encode_corpus(tok, docs_dir: Path, out_dir: Path, val_fraction: float, seed: int = 0,
                  shard_tokens: int = 100_000_000, batch_docs: int = 256) -> EncodeStats:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eot = tok.token_to_id(EOT)
    vocab = tok.get_vocab_size()
    stats = EncodeStats()
    splits = {s: {"docs": [], "bytes": [], "tokens": 0, "n": 0} for s in ("train", "val")}

    def flush(split: str) -> None:
        b = splits[split]
        if b["docs"]:
            write_shard(out_dir / f"{split}-{b['n']:05d}.bin", b["docs"], b["bytes"], vocab)
            b.update(docs=[], bytes=[], tokens=0, n=b["n"] + 1)

    def encode_batch(batch: list[dict]) -> None:
        encs = tok.encode_batch_fast([d["text"] for d in batch], add_special_tokens=False) \
            if hasattr(tok, "encode_batch_fast") else tok.encode_batch([d["text"] for d in batch], add_special_tokens=False)
        for d, e in zip(batch, encs):
            ids = np.empty(len(e.ids) + 1, dtype=np.uint32)
            ids[0] = eot
            ids[1:] = e.ids
            split = "val" if is_validation(d["id"], val_fraction, seed) else "train"
            nbytes = len(d["text"].encode("utf-8", "surrogatepass"))
            b = splits[split]
            b["docs"].append(ids)
            b["bytes"].append(nbytes)
            b["tokens"] += len(ids)
            setattr(stats, f"{split}_docs", getattr(stats, f"{split}_docs") + 1)
            setattr(stats, f"{split}_tokens", getattr(stats, f"{split}_tokens") + len(ids))
            stats.bytes += nbytes
            if b["tokens"] >= shard_tokens:
                flush(split)

    batch: list[dict] = []
    for doc in read_docs(docs_dir, columns=["id", "text"]):
        batch.append(doc)
        if len(batch) >= batch_docs:
            encode_batch(batch)
            batch = []
    encode_batch(batch)
    flush("train")
    flush("val")
    (out_dir / "stats.json").write_text(json.dumps(stats.__dict__, indent=2))
    return stats
