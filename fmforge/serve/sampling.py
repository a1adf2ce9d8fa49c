"""Per-request sampling: temperature, top-k, top-p, a seed, log-probabilities.

Sampling runs on the CPU from fp32 logits with the request's own torch.Generator, so a
seeded request gives the same tokens whatever else is in the batch. Greedy (temperature 0)
is an argmax and needs no generator.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # stop strings (not included in the output)
    stop_ids: set[int] = field(default_factory=set)  # stop tokens, e.g. end-of-text (not included)
    logprobs: int | None = None  # None: none; k: the sampled token's log-prob and the k most likely
    prompt_logprobs: bool = False  # echo: the prompt's own token log-probs

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def generator(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1 if seed is None else seed)
    return g


def sample(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    """One token from fp32 logits (V,) on the CPU."""
    if p.greedy:
        return int(logits.argmax())
    x = logits / p.temperature
    if 0 < p.top_k < x.shape[-1]:
        kth = torch.topk(x, p.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if p.top_p < 1.0:
        srt, order = torch.sort(x, descending=True)
        probs = srt.softmax(-1)
        # drop tokens once the more likely ones already hold top_p (the first one always stays)
        drop = probs.cumsum(-1) - probs >= p.top_p
        x = x.scatter(0, order, srt.masked_fill(drop, float("-inf")))
    return int(torch.multinomial(x.softmax(-1), 1, generator=gen))


def token_logprobs(logits: torch.Tensor, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """The model's log-prob of `token` and the k most likely (id, log-prob) from fp32 logits (V,)."""
    lp = logits.log_softmax(-1)
    top = []
    if k > 0:
        v, i = torch.topk(lp, k)
        top = list(zip(i.tolist(), v.tolist()))
    return float(lp[token]), top


def prompt_logprobs(logits: torch.Tensor, ids: list[int], k: int) -> list[tuple[float, list] | None]:
    """Log-probs of each prompt token given the ones before it; None for the first token.
    logits (T, V) are the prefill's, position t predicting token t+1."""
    lp = logits.log_softmax(-1)
    out: list = [None]
    tgt = torch.tensor(ids[1:])
    chosen = lp[:-1].gather(1, tgt[:, None])[:, 0].tolist() if len(ids) > 1 else []
    tops = torch.topk(lp[:-1], k) if k > 0 and len(ids) > 1 else None
    for t in range(len(ids) - 1):
        top = list(zip(tops.indices[t].tolist(), tops.values[t].tolist())) if tops is not None else []
        out.append((chosen[t], top))
    return out
