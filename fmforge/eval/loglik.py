"""Log-likelihood of continuations, batched: lm-evaluation-harness's arithmetic.

A (context, continuation) pair is tokenized as lm-eval's causal models do it: trailing
spaces of the context move to the continuation; the whole string and the context are
encoded apart and the continuation is what the whole has past the context's tokens (so
a merge across the boundary is the whole string's). A pair longer than the model's
context is cut from the left. Requests are sorted by length, longest first, and packed
many to a forward pass under a token budget, right-padded (causal attention never looks
right, so padding changes nothing). Only the continuation positions are projected to the
vocabulary, in fp32: log-softmax, the sum over the continuation's tokens, and whether
every token was the argmax (`is_greedy`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LM:
    """A model with its tokenizer (`tokenizers.Tokenizer`). `prefix` is put before every
    sequence: the document-boundary token an fmforge model was trained to read first; []
    for an HF folder, whose tokenizer's post-processor adds what it adds (lm-eval's hf)."""

    model: torch.nn.Module
    tokenizer: object
    prefix: list[int]
    add_special_tokens: bool = True
    batch_tokens: int = 16384
    autocast: object = None

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    @property
    def max_length(self) -> int:
        return self.model.cfg.context_length

    def encode(self, text: str) -> list[int]:
        return self.prefix + self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens).ids

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            cont = self.tokenizer.encode(continuation, add_special_tokens=False).ids
            return (self.prefix or cont[:1]), (cont if self.prefix else cont[1:])
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    @torch.no_grad()
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        enc = [self.encode_pair(c, x) for c, x in requests]
        return self.loglikelihood_tokens(enc)

    @torch.no_grad()
    def loglikelihood_tokens(self, enc: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        self.model.eval()
        L = self.max_length
        seqs = []
        for ctx, cont in enc:
            if not cont:
                raise ValueError("a continuation encoded to no tokens")
            seqs.append(((ctx + cont)[-(L + 1):][:-1], cont[-L:]))
        order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i][0]), seqs[i][0]))
        out: list[tuple[float, bool] | None] = [None] * len(seqs)
        i = 0
        while i < len(order):
            width = len(seqs[order[i]][0])  # the longest in this batch: it comes first
            n = max(1, self.batch_tokens // max(width, 1))
            batch = order[i:i + n]
            i += n
            x = torch.zeros(len(batch), width, dtype=torch.long)
            rows, cols, targets = [], [], []
            for r, j in enumerate(batch):
                inp, cont = seqs[j]
                x[r, :len(inp)] = torch.tensor(inp)
                rows += [r] * len(cont)
                cols += range(len(inp) - len(cont), len(inp))
                targets += cont
            x = x.to(self.device)
            with self.autocast if self.autocast is not None else torch.autocast(self.device.type, enabled=False):
                h = self.model.hidden(x)
            # every continuation position of the batch at once: one projection, one log-softmax
            row_t = torch.tensor(rows, device=self.device)
            sel = h[row_t, torch.tensor(cols, device=self.device)].to(self.model.output_weight().dtype)
            logp = F.log_softmax(self.model.logits(sel), dim=-1)
            target = torch.tensor(targets, device=self.device)
            tok_ll = logp.gather(1, target[:, None])[:, 0]
            miss = (logp.argmax(-1) != target).float()
            lls = torch.zeros(len(batch), dtype=torch.float64, device=self.device).index_add_(0, row_t, tok_ll.double())
            misses = torch.zeros(len(batch), device=self.device).index_add_(0, row_t, miss)
            for r, (ll, m) in enumerate(zip(lls.tolist(), misses.tolist())):
                out[batch[r]] = (ll, m == 0)
        return out  # type: ignore[return-value]
