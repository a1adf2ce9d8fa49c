"""WinoGrande, `{context_options[2], continuation, gold}`: partial scoring (lm-eval's
winogrande task). The sentence is cut at the blank; each option fills it as a different
context and the shared rest of the sentence is scored after each. acc_norm equals acc:
both options score the same continuation, so dividing by its length changes nothing."""
from __future__ import annotations

from pathlib import Path

from fmforge.eval.tasks import Task
from fmforge.eval.tasks.base import Item, iter_rows, need, need_gold, need_strings


def load(path: Path) -> list[Item]:
    items = []
    for n, row in iter_rows(path):
        contexts = need_strings(row, "context_options", path, n, 2)
        cont = need(row, "continuation", str, path, n).strip()
        gold = need_gold(row, "gold", len(contexts), path, n)
        items.append(Item([(c, " " + cont) for c in contexts], gold, [cont] * len(contexts)))
    return items


TASKS = [Task("winogrande", "mc", load, "tasks/winogrande.jsonl.gz")]
