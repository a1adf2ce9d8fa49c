"""Training batches from memory-mapped token shards, deterministic and resumable.

The training stream is cut into windows of `seq_len + 1` tokens (stride `seq_len`, so
every token is a target once). Each epoch visits all windows in an order drawn from
(seed, epoch). The loader's whole state is one integer, the number of windows handed
out so far, so a checkpoint restores it exactly. With several ranks, rank r of R takes
every R-th window of each global batch.
"""
from __future__ import annotations

import numpy as np
import torch

from fmforge.errors import DegenerateResult
from fmforge.tokenizer.shards import Shard


class TokenLoader:
    def __init__(self, shards: list[Shard], seq_len: int, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.shards, self.seq_len, self.batch_size = shards, seq_len, batch_size
        self.seed, self.rank, self.world = seed, rank, world
        counts = np.array([max(0, (int(s.n_tokens) - 1) // seq_len) for s in shards], dtype=np.int64)
        self.n_windows = int(counts.sum())
        if self.n_windows == 0:
            total = sum(int(s.n_tokens) for s in shards)
            raise DegenerateResult(
                f"training data has {total} tokens, fewer than one sequence of model.context_length + 1 = "
                f"{seq_len}+1 tokens: add data or lower model.context_length")
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.position = 0  # windows handed out so far, over all ranks
        self._epoch, self._order = -1, None

    def _window(self, k: int) -> np.ndarray:
        epoch, i = divmod(k, self.n_windows)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(self.n_windows, generator=g).numpy()
            self._epoch = epoch
        w = int(self._order[i])
        s = int(np.searchsorted(self.starts, w, side="right") - 1)
        start = (w - int(self.starts[s])) * self.seq_len
        return self.shards[s].tokens[start : start + self.seq_len + 1]

    @property
    def epoch(self) -> float:
        return self.position / self.n_windows

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch_size, seq_len) int64, on the CPU."""
        base = self.position + self.rank * self.batch_size
        rows = np.stack([self._window(base + j) for j in range(self.batch_size)]).astype(np.int64)
        self.position += self.batch_size * self.world
        t = torch.from_numpy(rows)
        return t[:, :-1].contiguous(), t[:, 1:].contiguous()

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict) -> None:
        if state["seq_len"] != self.seq_len or state["seed"] != self.seed:
            raise ValueError("checkpoint's loader was built with another seq_len/seed than this recipe")
        self.position = int(state["position"])
