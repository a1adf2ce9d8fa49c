"""Code generation scored by execution: n completions per problem, each run against the
problem's tests in the sandbox (fmforge.eval.sandbox), then pass@k.

pass@k is the unbiased estimator of Chen et al. (2021), for n samples of which c pass:
1 - C(n-c, k) / C(n, k), computed as a product so large n does not overflow.
Completions are cut at the first line that starts a new top-level statement (the Codex
paper's stop sequences), as the harnesses do.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fmforge.errors import UserError
from fmforge.eval.generate import generate
from fmforge.eval.loglik import LM
from fmforge.eval.sandbox import run_python

STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n@")


def pass_at_k(n: int, c: int, k: int) -> float:
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def truncate(completion: str) -> str:
    cut = min((i for i in (completion.find(s) for s in STOP) if i >= 0), default=len(completion))
    return completion[:cut]


def complete(lm: LM, prompt: str, n: int, temperature: float, max_new_tokens: int, seed: int = 0) -> list[str]:
    ids = lm.encode(prompt)
    eot = lm.prefix[0] if lm.prefix else None
    outs = []
    for s in range(n):
        new = generate(lm.model, ids, max_new_tokens, temperature, stop_id=eot, seed=seed + s)
        outs.append(truncate(lm.tokenizer.decode(new, skip_special_tokens=True)))
    return outs


def evaluate_code(lm: LM, problems: list, samples: int = 1, ks=(1,), temperature: float = 0.0,
                  max_new_tokens: int = 256, timeout_s: float = 5.0, memory_mb: int = 1024,
                  workers: int = 2) -> tuple[dict, list[dict]]:
    if samples > 1 and temperature <= 0:
        raise UserError(f"eval.code_samples={samples} needs eval.code_temperature > 0: greedy decoding gives one "
                        "completion (e.g. --set eval.code_temperature=0.8)")
    rows = []
    for p in problems:
        comps = complete(lm, p.prompt, samples, temperature, max_new_tokens)
        rows.append({"task_id": p.task_id, "completions": comps})
    return score_completions(problems, rows, ks, timeout_s, memory_mb, workers)


def score_completions(problems: list, rows: list[dict], ks=(1,), timeout_s: float = 5.0, memory_mb: int = 1024,
                      workers: int = 2) -> tuple[dict, list[dict]]:
    """Execute every completion; rows get `passed` (one per completion) and `status`."""
    jobs = [(r, p.program(c)) for p, r in zip(problems, rows) for c in r["completions"]]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(lambda j: run_python(j[1], timeout_s, memory_mb), jobs))
    k = 0
    for r in rows:
        res = results[k:k + len(r["completions"])]
        k += len(r["completions"])
        r["passed"] = [x.passed for x in res]
        r["status"] = [x.status for x in res]
    n = min(len(r["completions"]) for r in rows) if rows else 0
    metrics: dict = {"n": len(rows), "samples": n}
    for kk in ks:
        if kk <= n:
            metrics[f"pass@{kk}"] = float(np.mean([pass_at_k(len(r["passed"]), sum(r["passed"]), kk) for r in rows]))
    metrics["acc"] = metrics.get("pass@1")
    metrics["acc_norm"] = metrics["acc"]
    return metrics, rows
