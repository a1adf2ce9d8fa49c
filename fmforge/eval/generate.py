"""Sampling a completion with a key/value cache: one prefill, then one token per step."""
from __future__ import annotations

import torch

from fmforge.model.transformer import Transformer, new_caches


@torch.no_grad()
def generate(model: Transformer, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, stop_id: int | None = None, seed: int = 0) -> list[int]:
    """Token ids that follow `prompt_ids` (the prompt excluded). Greedy when temperature is 0."""
    model.eval()
    device = model.embed.weight.device
    ctx = model.cfg.context_length
    prompt_ids = prompt_ids[-(ctx - max_new_tokens):] if max_new_tokens < ctx else prompt_ids[-1:]
    budget = min(max_new_tokens, ctx - len(prompt_ids))
    caches = new_caches(model, 1, len(prompt_ids) + budget)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.tensor([prompt_ids], device=device)
    out: list[int] = []
    pos = 0
    for _ in range(budget):
        h = model.hidden(x, caches, start=pos)
        pos += x.shape[1]
        logits = model.logits(h[:, -1])[0]
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits[logits < kth] = -float("inf")
            probs = torch.softmax(logits, dim=-1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        if stop_id is not None and nxt == stop_id:
            break
        out.append(nxt)
        x = torch.tensor([[nxt]], device=device)
    return out
