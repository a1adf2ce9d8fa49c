"""Held-out evaluation: loss and bits per byte on whole validation documents.

Each document is scored on its own, as the compressors it is compared with see one file
at a time: the model reads the document-boundary token and predicts every token of the
document after it. Documents longer than the context are scored in windows of `context` tokens (a sliding
window): each window after the first scores the next `stride` tokens and re-reads the
`context - stride` before them as context. stride = context (the default) is lm-eval's
rolling windows, no overlap; a smaller stride gives each token more context for more compute
(stride 1: every token after the first `context` sees exactly `context` tokens).

bits per byte = (sum of -ln p over the document's tokens) / ln 2 / (UTF-8 bytes of the
documents). It does not depend on the tokenizer, so models with different vocabularies
and plain compressors can be compared.
"""
from __future__ import annotations

import gzip
import lzma
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from fmforge.tokenizer.shards import Shard


@dataclass
class HeldoutResult:
    docs: int
    tokens: int
    bytes: int
    nats: float

    @property
    def loss(self) -> float:
        return self.nats / max(self.tokens, 1)

    @property
    def bpb(self) -> float:
        return bits_per_byte(self.nats, self.bytes)

    def to_dict(self) -> dict:
        return {"docs": self.docs, "tokens": self.tokens, "bytes": self.bytes,
                "val_loss": self.loss, "val_bpb": self.bpb}


def bits_per_byte(nats: float, n_bytes: int) -> float:
    return nats / math.log(2) / n_bytes


def iter_docs(shards: list[Shard], max_docs: int | None = None, max_bytes: int | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """(token ids, byte count) of validation documents, in shard order, within the caps."""
    n = total = 0
    for shard in shards:
        for i in range(len(shard)):
            if (max_docs and n >= max_docs) or (max_bytes and total >= max_bytes):
                return
            n += 1
            total += int(shard.doc_bytes[i])
            yield np.asarray(shard.doc(i)), int(shard.doc_bytes[i])


def windows(ids: np.ndarray, context: int, stride: int) -> Iterator[tuple[np.ndarray, int]]:
    """(input+target window, index of the first target scored) covering every token once."""
    n = len(ids)
    if n <= context + 1:
        yield ids, 0
        return
    yield ids[: context + 1], 0
    end = context + 1
    while end < n:
        new_end = min(end + stride, n)
        start = new_end - context - 1
        yield ids[start:new_end], end - start - 1
        end = new_end


def score_docs(model, docs: Iterable[tuple[np.ndarray, int]], context: int, device, batch_size: int = 16,
               stride: int | None = None, autocast=None) -> HeldoutResult:
    """Every token of every document after its first (the boundary token), summed."""
    res = score_by_source(model, ((ids, n, "") for ids, n in docs), context, device, batch_size, stride, autocast)
    return res.get("", HeldoutResult(0, 0, 0, 0.0))


@torch.no_grad()
def score_by_source(model, docs: Iterable[tuple[np.ndarray, int, str]], context: int, device,
                    batch_size: int = 16, stride: int | None = None, autocast=None) -> dict[str, HeldoutResult]:
    """{source: result} of (token ids, UTF-8 bytes, source) documents. Windows wait in one
    queue per source, so every forward pass holds one source's windows and its summed loss
    belongs to that source, however the sources are interleaved."""
    stride = min(stride or context, context)
    results: dict[str, HeldoutResult] = {}
    pending: dict[str, list[tuple[np.ndarray, int]]] = {}

    def run(result: HeldoutResult, batch):
        x = torch.zeros(len(batch), context, dtype=torch.long)
        y = torch.full((len(batch), context), -100, dtype=torch.long)
        for r, (w, first) in enumerate(batch):
            w = torch.from_numpy(w.astype(np.int64))
            t = len(w) - 1
            x[r, :t] = w[:-1]
            y[r, first:t] = w[1 + first :]
        x, y = x.to(device), y.to(device)
        with autocast if autocast is not None else torch.autocast(device.type, enabled=False):
            nats = model(x, y, reduction="sum")
        result.nats += float(nats)
        result.tokens += int((y != -100).sum())

    for ids, nbytes, source in docs:
        result = results.setdefault(source, HeldoutResult(0, 0, 0, 0.0))
        result.docs += 1
        result.bytes += nbytes
        queue = pending.setdefault(source, [])
        for w in windows(ids, context, stride):
            queue.append(w)
            if len(queue) == batch_size:
                run(result, queue)
                queue.clear()
    for source, queue in pending.items():
        if queue:
            run(results[source], queue)
    return results


def compressed_sizes(text: str) -> tuple[int, int, int]:
    """(UTF-8 bytes, `gzip -9` bytes, `xz -9e` bytes) of one document."""
    b = text.encode("utf-8", "surrogatepass")
    return (len(b), len(gzip.compress(b, compresslevel=9, mtime=0)),
            len(lzma.compress(b, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)))


def compressor_bpb(texts: Iterable[str] = (), sizes: Iterable[tuple[int, int, int]] | None = None) -> dict[str, float]:
    """Bits per byte of `gzip -9` and `xz -9e`, each file compressed on its own (or from
    their `compressed_sizes`, when those are at hand)."""
    raw = gz = xz = 0
    for r, g, x in (sizes if sizes is not None else map(compressed_sizes, texts)):
        raw, gz, xz = raw + r, gz + g, xz + x
    return {"gzip_bpb": 8 * gz / raw, "xz_bpb": 8 * xz / raw, "baseline_bytes": raw}
