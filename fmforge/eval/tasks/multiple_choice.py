"""Tasks of the `{query, choices[], gold}` format (MosaicML's gauntlet files): ARC easy and
challenge, PIQA, OpenBookQA, COPA, BoolQ.

The prompt is the query made into lm-eval's template for the task, where the gauntlet
file differs from it (lm-eval tasks/arc, piqa, super_glue/boolq):
  ARC    "Question: {question}\\nAnswer:"   (the file has "Question: {question}")
  PIQA   "Question: {goal}\\nAnswer:"       (the file ends the query with a newline)
  BoolQ  "{passage}\\nQuestion: {q}?\\nAnswer:" (the file has "Passage: " first, no "Answer:")
  OpenBookQA, COPA: the query as given (lm-eval: the question stem; premise + connector).
The continuation is " " + choice. (lm-eval's COPA choices carry their own leading space
on top of the delimiter, a double space; we score the single-space form.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from fmforge.eval.tasks import Task
from fmforge.eval.tasks.base import Item, iter_rows, need, need_gold, need_strings


def answer_prompt(query: str) -> str:
    q = query.rstrip("\n")
    return q if q.endswith("Answer:") else q + "\nAnswer:"


def boolq_prompt(query: str) -> str:
    q = query[len("Passage: "):] if query.startswith("Passage: ") else query
    return answer_prompt(q)


def as_given(query: str) -> str:
    return query


def loader(prompt: Callable[[str], str]):
    def load(path: Path) -> list[Item]:
        items = []
        for n, row in iter_rows(path):
            ctx = prompt(need(row, "query", str, path, n))
            choices = need_strings(row, "choices", path, n, 2)
            gold = need_gold(row, "gold", len(choices), path, n)
            items.append(Item([(ctx, " " + c) for c in choices], gold, choices))
        return items

    return load


TASKS = [
    Task("arc_easy", "mc", loader(answer_prompt), "tasks/arc_easy.jsonl.gz", core_metric="acc_norm"),
    Task("arc_challenge", "mc", loader(answer_prompt), "tasks/arc_challenge.jsonl.gz", core_metric="acc_norm"),
    Task("piqa", "mc", loader(answer_prompt), "tasks/piqa.jsonl.gz", core_metric="acc_norm"),
    Task("openbook_qa", "mc", loader(as_given), "tasks/openbook_qa.jsonl.gz", core_metric="acc_norm"),
    Task("copa", "mc", loader(as_given), "tasks/copa.jsonl.gz"),
    Task("boolq", "mc", loader(boolq_prompt), "tasks/boolq.jsonl.gz"),
]
