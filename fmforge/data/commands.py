"""`fmforge data ...`: the data verbs (mounted by fmforge.cli)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from fmforge.config import load_recipe

app = typer.Typer(help='Collect raw sources and prepare (clean, filter, de-duplicate) them.\n\nExample: fmforge data collect stdlib --out runs/raw', no_args_is_help=True)
console = Console()
RecipeOpt = typer.Option(None, "--recipe", "-r", help="recipe YAML file or built-in name (default: demo)")
SetOpt = typer.Option(None, "--set", "-s", help="override one field, e.g. --set data.min_chars=200 (repeatable)")


def _recipe(recipe, sets):
    return load_recipe(recipe, sets or [])


# ------------------------------------------------------------------ data


@app.command("collect")
def data_collect(sources: List[str] = typer.Argument(..., help="folders (plain or HF save_to_disk), .jsonl[.gz|.zst], "
                                                    ".parquet, .warc[.gz], .tar[.gz] or text files, or 'stdlib'"),
                 out: Path = typer.Option(..., "--out", "-o", help="output folder of Parquet shards"),
                 include: List[str] = typer.Option(["*"], "--include", help="file-name globs for folders"),
                 text_field: str = typer.Option("text", "--text-field", help="JSONL/Parquet/HF field holding the text"),
                 strict: bool = typer.Option(False, "--strict", help="stop at the first unreadable record instead of counting it")):
    """Read raw sources into Parquet shards of {id, text, source, meta}.

    Example: fmforge data collect stdlib ~/notes --include '*.py' --include '*.md' --out runs/raw
    """
    from fmforge.data.collect import collect

    s = collect(sources, include, out, text_field=text_field, strict=strict)
    console.print_json(json.dumps({"docs": s.docs, "bytes": s.bytes, "skipped": s.skipped, "examples": s.examples}))


@app.command("prepare")
def data_prepare(input: Path = typer.Argument(..., help="folder of collected Parquet shards"),
                 out: Path = typer.Option(..., "--out", "-o"),
                 workers: Optional[int] = typer.Option(None, "--workers", "-w", help="processes (default: data.workers; 0 = every core)"),
                 executor: Optional[str] = typer.Option(None, "--executor", help="local | ray (default: data.executor)"),
                 decontaminate: Optional[List[str]] = typer.Option(None, "--decontaminate", help="evaluation file or folder (repeatable)"),
                 strict: bool = typer.Option(False, "--strict", help="a failing document stops the run instead of being counted"),
                 recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt):
    """Clean, filter, redact, decontaminate and de-duplicate collected documents (settings:
    the recipe's data section). Writes kept shards, stats.json and datacard.md.

    Example: fmforge data prepare runs/raw --out runs/clean --workers 2 --decontaminate ../shared/data/eval
    """
    from fmforge.data.datacard import summary
    from fmforge.data.prepare import prepare

    if not input.exists():
        raise FileNotFoundError(f"input folder not found: {input}")
    if executor not in (None, "local", "ray"):
        raise typer.BadParameter("--executor must be local or ray")
    s = prepare(input, out, _recipe(recipe, set_).data, workers=workers, executor=executor,
                decontaminate=decontaminate or None, strict=strict or None)
    console.print_json(json.dumps(summary(s)))
    console.print(f"data card: {out / 'datacard.md'}")


