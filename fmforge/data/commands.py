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
def data_collect(sources: List[str] = typer.Argument(..., help="folders, .jsonl[.gz|.zst] or .parquet files, or 'stdlib'"),
                 out: Path = typer.Option(..., "--out", "-o", help="output folder of Parquet shards"),
                 include: List[str] = typer.Option(["*"], "--include", help="file-name globs for folders")):
    """Read raw sources into Parquet shards of {id, text, source, meta}.

    Example: fmforge data collect stdlib ~/notes --include '*.py' --include '*.md' --out runs/raw
    """
    from fmforge.data.collect import collect

    s = collect(sources, include, out)
    console.print_json(json.dumps({"docs": s.docs, "bytes": s.bytes, "skipped": s.skipped, "examples": s.examples}))


@app.command("prepare")
def data_prepare(input: Path = typer.Argument(..., help="folder of collected Parquet shards"),
                 out: Path = typer.Option(..., "--out", "-o"),
                 recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt):
    """Clean, filter and de-duplicate collected documents (settings: the recipe's data section).

    Example: fmforge data prepare runs/raw --out runs/clean --set data.min_chars=200
    """
    from fmforge.data.prepare import prepare

    if not input.exists():
        raise FileNotFoundError(f"input folder not found: {input}")
    s = prepare(input, out, _recipe(recipe, set_).data)
    console.print_json(json.dumps(s.to_dict()))


