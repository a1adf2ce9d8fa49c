"""HellaSwag, `{ctx, endings[4], label}` (ctx already starts with the activity label).

lm-eval cleans WikiHow artefacts from the context and each ending (its
tasks/hellaswag/utils.py `preprocess`): ' [title]' becomes '. ', other [bracketed] tags
go, double spaces become one. We apply the same rules, so scores compare.
"""
from __future__ import annotations

import re
from pathlib import Path

from fmforge.eval.tasks import Task
from fmforge.eval.tasks.base import Item, iter_rows, need, need_gold, need_strings


def clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def load(path: Path) -> list[Item]:
    items = []
    for n, row in iter_rows(path):
        ctx = clean(need(row, "ctx", str, path, n))
        endings = [clean(e) for e in need_strings(row, "endings", path, n, 2)]
        gold = need_gold(row, "label", len(endings), path, n)
        items.append(Item([(ctx, " " + e) for e in endings], gold, endings))
    return items


TASKS = [Task("hellaswag", "mc", load, "tasks/hellaswag.jsonl.gz", core_metric="acc_norm")]
