"""`fmforge eval --model DIR --task ...` (called from cli.eval_) and `fmforge report`."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer

from fmforge.config import EvalConfig
from fmforge.errors import UserError
from fmforge.outputs import atomic_write_text, claimed, locked


def _device(name: str | None):
    import torch  # lazily: every CLI command mounts this module, and data verbs need no torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_tasks(lm, specs: list[str], e: EvalConfig, limit: int | None = None) -> tuple[dict, dict]:
    """{name: metrics}, {name: per-item rows} for task specs NAME[=FILE]."""
    from fmforge.eval.harness import score_task
    from fmforge.eval.tasks import resolve

    metrics, items = {}, {}
    for spec in specs:
        task, path = resolve(spec)
        data = task.load(path)
        if limit:
            data = data[:limit]
        if not data:
            raise UserError(f"--task {spec}: {path} holds no items")
        t0 = time.perf_counter()
        if task.kind == "code":
            from fmforge.eval.code import evaluate_code

            ks = sorted(k for k in e.code_k if k <= e.code_samples) or [1]
            m, rows = evaluate_code(lm, data, e.code_samples, ks, e.code_temperature,
                                    min(e.code_max_new_tokens, lm.max_length // 2), e.code_timeout_s,
                                    e.code_memory_mb)
        else:
            res = score_task(lm, task, data)
            m, rows = res.metrics, res.items
        m["file"], m["seconds"] = str(path), time.perf_counter() - t0
        metrics[task.name], items[task.name] = m, rows
    return metrics, items


def eval_markdown(result: dict) -> str:
    from fmforge.eval.harness import centred

    lines = [f"# fmforge eval: {result['model']}"]
    if result["tasks"]:
        lines += ["", "| task | n | acc | acc_norm | centred |", "|---|---|---|---|---|"]
    for name, m in result["tasks"].items():
        c = centred(m[m["core_metric"]], m["chance"]) if "chance" in m else None
        f = (lambda x: "—" if x is None else f"{x:.4f}")
        lines.append(f"| {name} | {m['n']} | {f(m.get('acc'))} | {f(m.get('acc_norm'))} | {f(c)} |")
    if result.get("core") is not None:
        lines += ["", f"CORE-like score (mean centred accuracy): **{result['core']:.4f}**"]
    if result.get("lm"):
        lm = result["lm"]
        lines += ["", f"Held-out: loss {lm['loss']:.4f} nats/token, {lm['bpb']:.4f} bits/byte over "
                      f"{lm['bytes']:,} bytes ({lm['docs']:,} documents)"]
        if lm.get("sources"):
            lines += ["", "| source | documents | bytes | loss | bits/byte |", "|---|---|---|---|---|"]
            lines += [f"| {k} | {v['docs']:,} | {v['bytes']:,} | {v['loss']:.4f} | {v['bpb']:.4f} |"
                      for k, v in lm["sources"].items()]
    return "\n".join(lines) + "\n"


def eval_model(model: Path, specs: list[str], out: Path, e: EvalConfig, per_item: bool = False,
               limit: int | None = None, texts: list[Path] | None = None, device: str | None = None,
               lm_bytes: int | None = None) -> dict:
    from fmforge.eval.harness import core_score
    from fmforge.eval.lm_text import heldout_lm
    from fmforge.eval.load import load_for_eval

    out = Path(out)
    with claimed(out, "eval", [model, *(texts or [])]) as od, locked(out):
        dev = _device(device)
        loaded = load_for_eval(model, dev, e.batch_tokens)
        lm = loaded.lm
        if dev.type == "cuda":
            import torch

            lm.autocast = torch.autocast("cuda", dtype=torch.bfloat16)
        tasks, items = run_tasks(lm, specs, e, limit or e.task_limit)
        result = {"model": str(model), "model_kind": loaded.kind, "tasks": tasks, "core": core_score(tasks),
                  "lm": heldout_lm(lm, list(texts or []), loaded.run_dir, lm_bytes or e.max_bytes, e.stride)}
        written = ["eval.json", "eval.md"]
        if per_item:
            (out / "items").mkdir(exist_ok=True)
            for name, rows in items.items():
                atomic_write_text(out / "items" / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
                written.append(f"items/{name}.jsonl")
        atomic_write_text(out / "eval.json", json.dumps(result, indent=2))
        atomic_write_text(out / "eval.md", eval_markdown(result))
        od.record(written)
    return result


def register(app: typer.Typer) -> None:
    @app.command()
    def report(runs: List[Path] = typer.Argument(..., help="run folders (runs/NAME); several are compared"),
               out: Optional[Path] = typer.Option(None, "--out", "-o",
                                                  help="folder for report.html and its PNGs (default: RUN/report)")):
        """A self-contained HTML report of one or more runs: loss and bits-per-byte curves,
        throughput and MFU, data-stage counts, tokenizer stats, evaluation table, cost.

        Examples:
          fmforge report runs/demo
          fmforge report runs/a runs/b --out cmp
        """
        from fmforge.eval.report import write_report

        path = write_report(runs, out or runs[0] / "report")
        typer.echo(str(path))
