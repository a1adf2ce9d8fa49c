"""MMLU from the original CSV files (no header: question, A, B, C, D, answer letter), 5-shot.

The prompt is lm-eval's `mmlu` (tasks/mmlu/default): a description line naming the subject,
then the first five rows of the subject's dev file as worked examples, then the question:

  The following are multiple choice questions (with answers) about {subject}.\\n\\n
  {question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer: {letter}\\n\\n   (x5)
  {question}\\nA. ...\\nAnswer:

and the choices are " A" .. " D". The file given is the MMLU folder (with dev/ and test/ or
val/; test is preferred) or one split folder beside dev/. acc is over all questions
(lm-eval's size-weighted mean over subjects); per-subject accuracy is in the item meta.
"""
from __future__ import annotations

import csv
from pathlib import Path

from fmforge.eval.tasks import Task
from fmforge.eval.tasks.base import Item, TaskError

LETTERS = ["A", "B", "C", "D"]
SHOTS = 5


def _rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TaskError(f"{path}: unreadable CSV ({e})") from None
    for n, r in enumerate(rows, 1):
        if len(r) != 6:
            raise TaskError(f"{path}:{n}: expected 6 columns (question, A, B, C, D, answer), got {len(r)}")
        if r[5].strip() not in LETTERS:
            raise TaskError(f"{path}:{n}: answer column is {r[5]!r}, not one of A, B, C, D")
    return rows


def question(r: list[str]) -> str:
    return f"{r[0].strip()}\nA. {r[1]}\nB. {r[2]}\nC. {r[3]}\nD. {r[4]}\nAnswer:"


def _split_dirs(path: Path) -> tuple[Path, Path]:
    if (path / "dev").is_dir():
        for split in ("test", "val"):
            if (path / split).is_dir():
                return path / split, path / "dev"
        raise TaskError(f"{path}: MMLU folder has dev/ but neither test/ nor val/")
    if (path.parent / "dev").is_dir() and path.is_dir():
        return path, path.parent / "dev"
    raise TaskError(f"{path}: not an MMLU folder (expected dev/ beside test/ or val/ CSV files)")


def load(path: Path) -> list[Item]:
    split, dev = _split_dirs(Path(path))
    items = []
    files = sorted(split.glob("*.csv"))
    if not files:
        raise TaskError(f"{split}: no *.csv files")
    for f in files:
        subject = f.stem.rsplit("_", 1)[0]  # abstract_algebra_test.csv -> abstract_algebra
        dev_file = dev / f"{subject}_dev.csv"
        if not dev_file.is_file():
            raise TaskError(f"{f}: its dev file {dev_file} (the few-shot examples) is missing")
        shots = _rows(dev_file)[:SHOTS]
        head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        head += "".join(question(s) + " " + s[5].strip() + "\n\n" for s in shots)
        for r in _rows(f):
            ctx = head + question(r)
            items.append(Item([(ctx, " " + L) for L in LETTERS], LETTERS.index(r[5].strip()), LETTERS,
                              {"subject": subject}))
    return items


TASKS = [Task("mmlu", "mc", load, "mmlu")]
