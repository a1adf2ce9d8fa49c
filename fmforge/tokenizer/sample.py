"""The tokenizer's training sample: whole documents, drawn uniformly by id hash.

Taking the first N bytes of a corpus would train on its first source only (all books,
no Wikipedia). Instead a first pass reads only the documents' sizes, then documents are
taken in the order of a hash of their id until the byte budget is met, and a second pass
streams those texts in corpus order. Both passes are streaming; memory is two integers
per document (its size and hash). The same corpus and budget always give the same sample.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pyarrow.compute as pc
import xxhash

from fmforge.data.documents import check_shards, iter_batches

SAMPLE_SEED = 0x70C  # independent of the split seed: the sample is not the split


def _batches(docs_dir: Path, columns: list[str]):
    for path in check_shards(docs_dir, "tokenizer training data"):
        yield from iter_batches(path, tuple(columns), batch_size=1024)  # ids filled in for a user's Parquet


def choose(keys: np.ndarray, sizes: np.ndarray, budget: int) -> np.ndarray:
    """Boolean mask of the documents in the sample: lowest keys first until `budget` bytes
    (the last one taken may overshoot); documents of size 0 are never taken."""
    take = np.zeros(len(keys), dtype=bool)
    if int(sizes.sum()) <= budget:
        return sizes > 0
    order = np.argsort(keys, kind="stable")
    cum = np.cumsum(sizes[order])
    n = int(np.searchsorted(cum, budget, side="left")) + 1
    take[order[:n]] = True
    return take & (sizes > 0)


def sample_docs(docs_dir: Path, budget: int, exclude: Optional[Callable[[str], bool]] = None) -> Iterator[str]:
    """Texts of the sample, in corpus order; documents for which `exclude(id)` is true never enter."""
    keys: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    for b in _batches(docs_dir, ["id", "text"]):
        ids = b.column("id").to_pylist()
        n = pc.binary_length(b.column("text")).to_numpy(zero_copy_only=False).astype(np.int64)
        if exclude is not None:
            n = np.where([exclude(i) for i in ids], 0, n)
        keys.append(np.fromiter((xxhash.xxh64_intdigest(i.encode(), seed=SAMPLE_SEED) for i in ids), np.uint64, len(ids)))
        sizes.append(n)
    if not keys:
        return
    take = choose(np.concatenate(keys), np.concatenate(sizes), budget)
    k = 0
    for b in _batches(docs_dir, ["text"]):
        sel = take[k : k + b.num_rows]
        k += b.num_rows
        if sel.any():
            yield from b.column("text").filter(sel).to_pylist()
