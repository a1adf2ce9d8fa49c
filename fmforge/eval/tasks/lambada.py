"""LAMBADA (OpenAI version), `{context, continuation}`: the last word of a passage. acc is
an exact greedy match (every token of " " + word is the model's argmax, lm-eval's
`is_greedy`); the log-likelihood of the word is reported too (mean, and perplexity)."""
from __future__ import annotations

from pathlib import Path

from fmforge.eval.tasks import Task
from fmforge.eval.tasks.base import Item, TaskError, iter_rows, need


def load(path: Path) -> list[Item]:
    items = []
    for n, row in iter_rows(path):
        ctx = need(row, "context", str, path, n)
        word = need(row, "continuation", str, path, n).strip()
        if not word:
            raise TaskError(f"{path}:{n}: field 'continuation' is empty")
        items.append(Item([(ctx.rstrip(" "), " " + word)], 0, [word]))
    return items


TASKS = [Task("lambada_openai", "greedy", load, "tasks/lambada_openai.jsonl.gz")]
