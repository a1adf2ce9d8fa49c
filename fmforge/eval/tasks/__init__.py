"""The task registry: a name -> how to read its file, how to score it, its default file.

Adding a task is one small file in this folder that defines `TASKS`, a list of `Task`,
and one line in `FAMILIES` below. Scoring kinds:
  mc      multiple choice by log-likelihood: acc (argmax) and acc_norm (argmax of the
          log-likelihood divided by the choice's length in characters), lm-eval's way
  greedy  one continuation: acc is an exact greedy match, plus its log-likelihood (LAMBADA)
  code    completions executed against tests: pass@k (HumanEval; fmforge.eval.code)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fmforge.errors import InputNotFound, UserError
from fmforge.eval.tasks.base import Item, data_root

FAMILIES = ("hellaswag", "multiple_choice", "winogrande", "lambada", "mmlu", "humaneval")


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # mc | greedy | code
    load: Callable[[Path], list]  # file -> items (Item; code tasks: problems)
    default_file: str  # relative to the eval data root (fmforge.eval.tasks.base.data_root)
    core_metric: str = "acc"  # what the combined CORE-like score takes from this task


def registry() -> dict[str, Task]:
    out: dict[str, Task] = {}
    for fam in FAMILIES:
        for t in importlib.import_module(f"fmforge.eval.tasks.{fam}").TASKS:
            out[t.name] = t
    return out


def resolve(spec: str) -> tuple[Task, Path]:
    """`NAME` or `NAME=FILE` -> (task, file)."""
    name, _, file = spec.partition("=")
    tasks = registry()
    if name not in tasks:
        raise UserError(f"--task {spec}: unknown task {name!r}; known: {', '.join(sorted(tasks))}")
    task = tasks[name]
    if file:
        path = Path(file)
    else:
        root = data_root()
        if root is None:
            raise InputNotFound(f"--task {name}: no file given and no eval data folder found (set FMFORGE_EVAL_DATA "
                                f"to the folder holding {task.default_file}, or pass --task {name}=FILE)")
        path = root / task.default_file
    if not path.exists():
        raise InputNotFound(f"--task {name}: {path} not found")
    return task, path


__all__ = ["Item", "Task", "registry", "resolve", "FAMILIES"]
