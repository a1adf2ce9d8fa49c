"""HumanEval (`HumanEval.jsonl.gz`: task_id, prompt, entry_point, canonical_solution, test):
completed by the model, executed against the tests in the sandbox (fmforge.eval.code)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fmforge.eval.tasks import Task
from fmforge.eval.tasks.base import iter_rows, need


@dataclass
class Problem:
    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    test: str

    def program(self, completion: str) -> str:
        """What is executed: the prompt, the completion, the tests and the call of check."""
        return f"{self.prompt}{completion}\n\n{self.test}\n\ncheck({self.entry_point})\n"


def load(path: Path) -> list[Problem]:
    out = []
    for n, row in iter_rows(path):
        out.append(Problem(*(need(row, k, str, path, n) for k in
                             ("task_id", "prompt", "entry_point", "canonical_solution", "test"))))
    return out


TASKS = [Task("humaneval", "code", load, "humaneval/HumanEval.jsonl.gz")]
