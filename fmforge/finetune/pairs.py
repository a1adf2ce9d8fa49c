"""Instruction pairs from Python files: for each function with a docstring, the prompt is
its signature and docstring, the completion its body (the demo's `corpus-functions` data).

Pairs come from a run's prepared documents (what pretraining read), split by the same
document hash as pretraining's validation set, so held-out pairs are from files the
model never saw.
"""
from __future__ import annotations

import ast
import json
import random
from pathlib import Path


def _strip(lines: list[str], indent: int) -> str:
    """The lines less `indent` columns (blank lines kept as line breaks)."""
    out = []
    for ln in lines:
        if not ln.strip():
            out.append("\n" if ln.endswith("\n") else "")
        else:
            out.append(ln[indent:] if ln[:indent].strip() == "" else ln.lstrip())
    return "".join(out)


def function_pairs(source: str) -> list[dict]:
    """{prompt, completion} for every function (methods and nested ones too) whose body holds
    more than its docstring; indentation removed to the `def`'s."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return []
    lines = source.splitlines(keepends=True)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or ast.get_docstring(node) is None:
            continue
        doc = node.body[0]
        if len(node.body) < 2 or doc.end_lineno <= node.lineno or node.body[1].lineno <= doc.end_lineno:
            continue  # a one-line def, or code on the docstring's own line
        prompt = _strip(lines[node.lineno - 1: doc.end_lineno], node.col_offset)
        body = _strip(lines[doc.end_lineno: node.end_lineno], node.col_offset)
        if body.strip():
            out.append({"prompt": prompt, "completion": body.rstrip() + "\n"})
    return out


def build_corpus_pairs(prepare_dir: Path, val_fraction: float, split_seed: int, tok, max_length: int,
                       train_out: Path, eval_out: Path, seed: int = 0) -> dict:
    """Write train / held-out pair JSONL files (rows grouped by file) from prepared documents."""
    from fmforge.data.documents import read_docs
    from fmforge.outputs import atomic_write_text
    from fmforge.tokenizer.encode import is_validation

    sides: dict[str, list[dict]] = {"train": [], "eval": []}
    files = {"train": 0, "eval": 0}
    too_long = 0
    for d in read_docs(prepare_dir, columns=["id", "text", "meta"]):
        try:
            path = json.loads(d.get("meta") or "{}").get("path") or d["id"]
        except ValueError:
            path = d["id"]
        if not str(path).endswith(".py"):
            continue
        side = "eval" if is_validation(d["id"], val_fraction, split_seed) else "train"
        pairs = function_pairs(d["text"])
        files[side] += bool(pairs)
        for p in pairs:
            n = len(tok(p["prompt"] + p["completion"], add_special_tokens=False)["input_ids"]) + 2
            if n > max_length:
                too_long += 1
                continue
            sides[side].append({**p, "group": str(path)})
    for side, rows in sides.items():
        random.Random(seed).shuffle(rows)
        atomic_write_text(train_out if side == "train" else eval_out, "".join(json.dumps(r) + "\n" for r in rows))
    return {"train_pairs": len(sides["train"]), "eval_pairs": len(sides["eval"]), "train_files": files["train"],
            "eval_files": files["eval"], "skipped_too_long": too_long}
