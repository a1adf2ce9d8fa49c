"""`fmforge tokenizer ...`: the tokenizer verbs (mounted by fmforge.cli)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from fmforge.config import load_recipe

app = typer.Typer(help='Train a BPE tokenizer and encode a corpus to token shards.\n\nExample: fmforge tokenizer train --data runs/demo/prepare --vocab-size 8192 --out runs/tok8k', no_args_is_help=True)
console = Console()
RecipeOpt = typer.Option(None, "--recipe", "-r", help="recipe YAML file or built-in name (default: demo)")
SetOpt = typer.Option(None, "--set", "-s", help="override one field, e.g. --set data.min_chars=200 (repeatable)")


def _recipe(recipe, sets):
    return load_recipe(recipe, sets or [])


# ------------------------------------------------------------------ tokenizer


@app.command("train")
def tokenizer_train(data: Path = typer.Option(..., "--data", help="folder of prepared Parquet shards"),
                    out: Path = typer.Option(..., "--out", "-o"),
                    vocab_size: Optional[int] = typer.Option(None, "--vocab-size"),
                    recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt):
    """Train a byte-level BPE tokenizer; writes tokenizer.json (loadable by transformers).

    Example: fmforge tokenizer train --data runs/demo/prepare --vocab-size 8192 --out runs/tok8k
    """
    from fmforge.data.documents import read_docs
    from fmforge.tokenizer.bpe import train_bpe

    cfg = _recipe(recipe, set_).tokenizer
    if vocab_size:
        cfg = cfg.model_copy(update={"vocab_size": vocab_size})
    if not data.exists():
        raise FileNotFoundError(f"data folder not found: {data}")
    tok = train_bpe((d["text"] for d in read_docs(data, columns=["text"])), cfg, out)
    console.print(f"vocabulary {tok.get_vocab_size():,} → {out / 'tokenizer.json'}")


@app.command("encode")
def tokenizer_encode(tokenizer: Path = typer.Option(..., "--tokenizer", help="folder or tokenizer.json"),
                     data: Path = typer.Option(..., "--data"), out: Path = typer.Option(..., "--out", "-o"),
                     recipe: Optional[str] = RecipeOpt, set_: Optional[List[str]] = SetOpt):
    """Encode prepared documents to token shards with a train/validation split by document.

    Example: fmforge tokenizer encode --tokenizer runs/tok8k --data runs/demo/prepare --out runs/shards
    """
    from fmforge.tokenizer.bpe import load
    from fmforge.tokenizer.encode import encode_corpus

    r = _recipe(recipe, set_)
    s = encode_corpus(load(tokenizer), data, out, r.data.val_fraction, r.data.split_seed)
    console.print_json(json.dumps(s.__dict__))


