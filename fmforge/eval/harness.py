"""Score tasks with a model: every request of every item of a task in one batched pass,
then acc / acc_norm per item (lm-eval's rules), the task means and a combined score.

CORE-like score (nanochat's CORE, DCLM's idea): each task's accuracy centred on its
chance level, (acc - chance) / (1 - chance), averaged over the tasks. Chance is the
mean over items of 1 / number of choices (0 for LAMBADA's open answer), so 0 is random
guessing and 1 is every answer right, whatever the number of choices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fmforge.eval.loglik import LM
from fmforge.eval.tasks import Item, Task


@dataclass
class TaskResult:
    name: str
    metrics: dict
    items: list[dict]


def score_task(lm: LM, task: Task, items: list[Item]) -> TaskResult:
    flat = [req for it in items for req in it.requests]
    results = lm.loglikelihood(flat)
    rows, k = [], 0
    for n, it in enumerate(items):
        res = results[k:k + len(it.requests)]
        k += len(it.requests)
        lls = np.array([r[0] for r in res])
        row = {"i": n, "gold": it.gold, "loglik": lls.tolist(), "greedy": [r[1] for r in res]}
        if task.kind == "greedy":
            row["acc"] = row["acc_norm"] = float(res[0][1])
        else:
            lens = np.array([float(len(c)) for c in it.choices])
            row["pred"] = int(np.argmax(lls))
            row["pred_norm"] = int(np.argmax(lls / lens))
            row["acc"] = float(row["pred"] == it.gold)
            row["acc_norm"] = float(row["pred_norm"] == it.gold)
        row.update(it.meta)
        rows.append(row)
    n = len(rows)
    metrics = {"acc": sum(r["acc"] for r in rows) / n, "acc_norm": sum(r["acc_norm"] for r in rows) / n, "n": n}
    if task.kind == "greedy":
        mean_ll = sum(r["loglik"][0] for r in rows) / n
        metrics.update(loglik=mean_ll, ppl=math.exp(-mean_ll), chance=0.0)
    else:
        metrics["chance"] = sum(1 / len(it.requests) for it in items) / n
    if any("subject" in r for r in rows):
        by: dict[str, list[float]] = {}
        for r in rows:
            by.setdefault(r["subject"], []).append(r["acc"])
        metrics["subjects"] = {s: sum(v) / len(v) for s, v in sorted(by.items())}
    metrics["core_metric"] = task.core_metric
    return TaskResult(task.name, metrics, rows)


def centred(acc: float, chance: float) -> float:
    return (acc - chance) / (1 - chance)


def core_score(tasks: dict[str, dict]) -> float | None:
    """Mean centred accuracy over the scored multiple-choice and greedy tasks."""
    vals = [centred(m[m.get("core_metric", "acc")], m["chance"]) for m in tasks.values() if "chance" in m]
    return sum(vals) / len(vals) if vals else None
