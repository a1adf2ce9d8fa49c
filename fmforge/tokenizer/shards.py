"""Token shards: the binary format the trainer memory-maps.

Layout of one ``.bin`` shard (little-endian):

    offset 0   header, 64 bytes:
               magic b"FMTOKEN1" | version u32 | itemsize u32 (2: uint16 ids, 4: uint32)
               | n_docs u64 | n_tokens u64 | vocab_size u64 | 24 reserved bytes
    offset 64  tokens: n_tokens ids of `itemsize` bytes
    then       offsets: n_docs + 1 u64, document i is tokens[offsets[i]:offsets[i+1]]
    then       doc_bytes: n_docs u64, the UTF-8 size of each document's text (for bits/byte)

Each document starts with the document-boundary token. Shards are written to a temp
file and renamed, so a shard that exists is complete.

A split is the files ``{split}-NNNNNN.bin`` of a folder in name order (`open_split`);
`fmforge.tokenizer.encode` writes shard N from the N-th run of about `chunk_bytes` of
input text, so documents appear in corpus order across a split's shards.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"FMTOKEN1"
VERSION = 1
HEADER = struct.Struct("<8sIIQQQ24x")
assert HEADER.size == 64


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def write_shard(path: Path, docs: list[np.ndarray], doc_bytes: list[int], vocab_size: int) -> None:
    """One shard from a list of per-document id arrays."""
    dtype = dtype_for(vocab_size)
    lengths = np.array([len(d) for d in docs], dtype=np.uint64)
    offsets = np.zeros(len(docs) + 1, dtype=np.uint64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(docs).astype(dtype, copy=False) if docs else np.zeros(0, dtype)
    write_arrays(path, tokens, offsets, doc_bytes, vocab_size)


def write_arrays(path: Path, tokens: np.ndarray, offsets: np.ndarray, doc_bytes, vocab_size: int) -> None:
    """One shard from all its ids and the n_docs + 1 document offsets, atomically."""
    dtype = dtype_for(vocab_size)
    tokens = np.asarray(tokens).astype(dtype, copy=False)
    offsets = np.asarray(offsets, dtype=np.uint64)
    doc_bytes = np.asarray(doc_bytes, dtype=np.uint64)
    if len(offsets) != len(doc_bytes) + 1 or int(offsets[-1]) != len(tokens):
        raise ValueError("shard offsets do not match its documents and tokens")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(HEADER.pack(MAGIC, VERSION, dtype.itemsize, len(doc_bytes), len(tokens), vocab_size))
        f.write(tokens.tobytes())
        f.write(offsets.tobytes())
        f.write(doc_bytes.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Shard:
    """A memory-mapped shard: `tokens` (all ids), `offsets`, `doc_bytes`, `doc(i)`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            head = f.read(HEADER.size)
        if len(head) < HEADER.size:
            raise ValueError(f"{self.path}: not a token shard (file shorter than its header)")
        magic, version, itemsize, n_docs, n_tokens, vocab = HEADER.unpack(head)
        if magic != MAGIC:
            raise ValueError(f"{self.path}: not a token shard (magic {magic!r})")
        if version != VERSION:
            raise ValueError(f"{self.path}: shard version {version}, this fmforge reads {VERSION}")
        self.vocab_size, self.n_docs, self.n_tokens = vocab, n_docs, n_tokens
        dtype = np.uint16 if itemsize == 2 else np.uint32
        expected = HEADER.size + n_tokens * itemsize + (2 * n_docs + 1) * 8
        if self.path.stat().st_size != expected:
            raise ValueError(f"{self.path}: truncated shard ({self.path.stat().st_size} bytes, expected {expected})")
        mm = np.memmap(self.path, mode="r", dtype=np.uint8)
        end = HEADER.size + n_tokens * itemsize
        self.tokens = mm[HEADER.size:end].view(dtype)
        self.offsets = mm[end : end + (n_docs + 1) * 8].view(np.uint64)
        self.doc_bytes = mm[end + (n_docs + 1) * 8 :].view(np.uint64)

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def __len__(self) -> int:
        return self.n_docs


def shard_files(folder: Path, split: str) -> list[Path]:
    return sorted(p for p in Path(folder).glob(f"{split}-*.bin") if not p.name.startswith("."))


def open_split(folder: Path, split: str) -> list[Shard]:
    files = shard_files(folder, split)
    if not files:
        raise FileNotFoundError(f"no {split} token shards in {folder} (run the tokenizer stage first)")
    return [Shard(p) for p in files]
