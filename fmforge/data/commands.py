"""`fmforge data ...`: the data verbs (mounted by fmforge.cli).

Each verb claims its --out first (fmforge.outputs.claim: refused if it holds someone
else's files or is, or is inside or around, an input); a verb that fails on its input
leaves no output folder behind that it created.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from fmforge.options import RecipeOpt, SetOpt, recipe_from, with_options
from fmforge.outputs import claimed, need

app = typer.Typer(help='Collect raw sources and prepare (clean, filter, de-duplicate) them.\n\nExample: fmforge data collect stdlib --out runs/raw', no_args_is_help=True)
console = Console()


# ------------------------------------------------------------------ data


@app.command("collect")
def data_collect(sources: List[str] = typer.Argument(..., help="folders (plain or HF save_to_disk), .jsonl[.gz|.zst], "
                                                    ".parquet, .warc[.gz], .tar[.gz] or text files, or 'stdlib'"),
                 out: Path = typer.Option(..., "--out", "-o", help="output folder of Parquet shards"),
                 include: List[str] = typer.Option(["*"], "--include", help="file-name globs for folders"),
                 text_field: str = typer.Option("text", "--text-field", help="JSONL/Parquet/HF field holding the text"),
                 strict: bool = typer.Option(False, "--strict", help="stop at the first unreadable record instead of counting it"),
                 html_extractor: str = typer.Option("resiliparse", "--html-extractor", help="WARC HTML to main text: resiliparse | trafilatura")):
    """Read raw sources into Parquet shards of {id, text, source, meta}.

    Example: fmforge data collect stdlib ~/notes --include '*.py' --include '*.md' --out runs/raw
    """
    from fmforge.data.collect import collect

    if html_extractor not in ("resiliparse", "trafilatura"):
        raise typer.BadParameter("--html-extractor must be resiliparse or trafilatura")
    for s in sources:
        need(s, "data source")
    with claimed(out, "data collect", sources):
        s = collect(sources, include, out, text_field=text_field, strict=strict, html_extractor=html_extractor)
    console.print_json(json.dumps({"docs": s.docs, "bytes": s.bytes, "skipped": s.skipped, "examples": s.examples}))


@app.command("prepare")
def data_prepare(input: Path = typer.Argument(..., help="folder of collected Parquet shards (or any Parquet with a text column)"),
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
    from fmforge.data.documents import check_shards
    from fmforge.data.prepare import KIND, prepare

    if executor not in (None, "local", "ray"):
        raise typer.BadParameter("--executor must be local or ray")
    cfg = with_options(recipe_from(recipe, set_).data, {"workers": ("--workers", workers),
                                                        "executor": ("--executor", executor)})
    check_shards(need(input, "input folder"), "prepare input")  # before --out is made: bad input leaves nothing
    evals = [need(Path(p), "--decontaminate file") for p in (decontaminate or cfg.decontaminate)]
    with claimed(out, KIND, [input, *evals]):
        s = prepare(input, out, cfg, workers=workers, executor=executor, progress=True,
                    decontaminate=decontaminate or None, strict=strict or None)
    console.print_json(json.dumps(summary(s)))
    console.print(f"data card: {out / 'datacard.md'}")
