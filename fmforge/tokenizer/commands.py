"""`fmforge tokenizer ...`: the tokenizer verbs (mounted by fmforge.cli)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from fmforge.errors import InputNotFound, UserError
from fmforge.outputs import atomic_write_text, claimed, need
from fmforge.options import RecipeOpt, SetOpt, recipe_from, with_options

app = typer.Typer(help='Train a BPE tokenizer, measure tokenizers, and encode a corpus to token shards.\n\n'
                  'Example: fmforge tokenizer train --data runs/demo/prepare --vocab-size 8192 --out runs/tok8k',
                  no_args_is_help=True)
console = Console()


@app.command("train")
def tokenizer_train(data: Path = typer.Option(..., "--data", help="folder of prepared Parquet shards"),
                    out: Path = typer.Option(..., "--out", "-o"),
                    vocab_size: Optional[int] = typer.Option(None, "--vocab-size"),
                    sample_bytes: Optional[int] = typer.Option(None, "--sample-bytes",
                                                               help="training sample size (UTF-8 bytes)"),
                    digits: Optional[int] = typer.Option(None, "--digits", help="max digits per pre-token: 1 or 3"),
                    normalize: Optional[str] = typer.Option(None, "--normalize", help="none, NFC or NFKC"),
                    all_docs: bool = typer.Option(False, "--all-docs",
                                                  help="train on validation documents too (default: left out)"),
                    recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt):
    """Train a byte-level BPE tokenizer; writes tokenizer.json (loadable by transformers).

    The training sample is whole documents drawn by id hash up to --sample-bytes; the
    recipe's validation documents are left out, so held-out numbers stay honest.

    Example: fmforge tokenizer train --data runs/demo/prepare --vocab-size 8192 --out runs/tok8k
    """
    from fmforge.tokenizer.bpe import train_bpe
    from fmforge.tokenizer.encode import is_validation
    from fmforge.tokenizer.sample import sample_docs

    from fmforge.data.documents import check_shards
    from fmforge.tokenizer.encode import check_split

    r = recipe_from(recipe, set_)
    cfg = with_options(r.tokenizer, {"vocab_size": ("--vocab-size", vocab_size),
                                     "sample_bytes": ("--sample-bytes", sample_bytes), "digits": ("--digits", digits),
                                     "normalize": ("--normalize", normalize)})
    check_shards(need(data, "data folder"), "tokenizer training data")
    if not all_docs:
        check_split(data, r.data.val_fraction, r.data.split_seed)
    exclude = None if all_docs else (lambda i: is_validation(i, r.data.val_fraction, r.data.split_seed))
    t0 = time.perf_counter()
    with claimed(out, "tokenizer train", [data]):
        tok = train_bpe(sample_docs(data, cfg.sample_bytes, exclude=exclude), cfg, out)
    console.print(f"vocabulary {tok.get_vocab_size():,} in {time.perf_counter() - t0:.1f}s → {out / 'tokenizer.json'}")


@app.command("encode")
def tokenizer_encode(tokenizer: Path = typer.Option(..., "--tokenizer", help="folder or tokenizer.json"),
                     data: Path = typer.Option(..., "--data", help="folder of prepared Parquet shards"),
                     out: Path = typer.Option(..., "--out", "-o"),
                     workers: Optional[int] = typer.Option(None, "--workers", "-j", help="processes (default: all cores)"),
                     fast: bool = typer.Option(True, "--fast/--hf", help="tiktoken when verified (default) or HF only"),
                     recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt):
    """Encode prepared documents to token shards with a train/validation split by document.

    Parallel over all cores; rerun after a kill to resume (finished shards are kept).

    Example: fmforge tokenizer encode --tokenizer runs/tok8k --data runs/demo/prepare --out runs/shards
    """
    from fmforge.tokenizer.encode import encode_corpus

    from fmforge.data.documents import check_shards
    from fmforge.tokenizer.bpe import tokenizer_file

    r = recipe_from(recipe, set_)
    tokenizer_file(need(tokenizer, "tokenizer"))
    check_shards(need(data, "data folder"), "encode input")
    t0 = time.perf_counter()
    with claimed(out, "tokenizer encode", [data, tokenizer]):
        s = encode_corpus(tokenizer, data, out, r.data.val_fraction, r.data.split_seed,
                          workers=r.tokenizer.workers if workers is None else workers,
                          chunk_bytes=r.tokenizer.chunk_bytes, fast=fast, verbose=True,
                          executor=r.data.executor, ray_address=r.data.ray_address)
    secs = time.perf_counter() - t0
    console.print_json(json.dumps({**s.__dict__, "seconds": secs, "MB_per_s": s.bytes / 1e6 / max(secs, 1e-9)}))


@app.command("report")
def tokenizer_report(tokenizer: List[Path] = typer.Option(..., "--tokenizer", "-t",
                                                          help="folder or tokenizer.json (repeatable: compares)"),
                     data: List[Path] = typer.Option(..., "--data", "-d",
                                                     help="held-out text: prepared Parquet folder/file, JSONL(.gz/.zst) "
                                                          "or text file (repeatable)"),
                     max_bytes: Optional[int] = typer.Option(None, "--max-bytes", help="at most about this much text from each --data"),
                     json_out: Optional[Path] = typer.Option(None, "--json", help="also write the figures here")):
    """Bytes/token and tokens/word per source, vocabulary use, round-trip exactness; one row per tokenizer.

    Example: fmforge tokenizer report -t runs/tok8k -t runs/tok32k -d runs/demo/prepare
    """
    from fmforge.tokenizer.report import measure, table_rows

    from fmforge.tokenizer.bpe import tokenizer_file

    for p in tokenizer:
        tokenizer_file(need(p, "tokenizer"))
    for p in data:
        need(p, "data")
    if json_out:
        _check_json_out(json_out, [*tokenizer, *data])
    reports = measure(tokenizer, data, max_bytes)
    head, rows = table_rows(reports)
    table = Table(*head)
    for row in rows:
        table.add_row(*row)
    Console(width=None if console.is_terminal else 200).print(table)  # piped: don't squeeze to 80 columns
    for r in reports:
        for doc in r.failed_docs:
            console.print(f"[red]round trip failed[/red] {r.name}: {doc}")
    if json_out:
        atomic_write_text(json_out, json.dumps([r.to_dict() for r in reports], indent=2))
    if any(r.round_trip_failures for r in reports):
        raise typer.Exit(1)


def _check_json_out(json_out: Path, inputs: List[Path]) -> None:
    """--json is a new file or a report this command wrote before, in a folder that exists:
    checked before measuring, so a bad path neither overwrites a user's file nor fails at the end."""
    for p in inputs:  # never over an input
        if Path(p).resolve() == json_out.resolve() or (Path(p).is_dir() and Path(p).resolve() in json_out.resolve().parents):
            raise UserError(f"--json {json_out} is, or is inside, the input {p}: choose another file")
    if json_out.is_dir():
        raise UserError(f"--json {json_out} is a folder; give a file name such as {json_out / 'report.json'}")
    if not json_out.parent.is_dir():
        raise InputNotFound(f"--json {json_out}: folder {json_out.parent} does not exist")
    if json_out.exists() and not _is_report(json_out):
        raise UserError(f"--json {json_out} exists and was not written by `fmforge tokenizer report`: "
                        "choose another file name")


def _is_report(path: Path) -> bool:
    """A file `tokenizer report --json` wrote: a JSON list of per-tokenizer figures."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, list) and all(isinstance(r, dict) and "round_trip_failures" in r for r in data)
