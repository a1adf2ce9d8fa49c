"""Shared fixtures: a small real corpus (files copied from the standard library) and a
recipe sized to train in seconds on a CPU."""
from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest
import yaml

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """~60 real Python files (json, email, collections, ...) in a folder of their own."""
    out = tmp_path_factory.mktemp("corpus")
    for pkg in ("json", "email", "collections", "importlib", "http", "logging"):
        for f in sorted((STDLIB / pkg).glob("*.py")):
            dest = out / pkg / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
    return out


def write_recipe(path: Path, corpus: Path, out_dir: Path, name: str = "t", **over) -> Path:
    recipe = {
        "name": name,
        "out_dir": str(out_dir),
        "data": {"sources": [str(corpus)], "include": ["*.py"], "val_fraction": 0.15},
        "tokenizer": {"vocab_size": 512},
        "model": {"d_model": 64, "n_layers": 2, "n_heads": 2, "context_length": 64},
        "train": {"max_steps": 6, "micro_batch": 4, "lr": 1e-3, "warmup_steps": 2, "threads": 1},
        "eval": {"max_new_tokens": 8, "max_docs": 4},
    }
    for k, v in over.items():
        recipe[k] = {**recipe.get(k, {}), **v} if isinstance(v, dict) else v
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def small_recipe(tmp_path, corpus_dir) -> Path:
    return write_recipe(tmp_path / "recipe.yaml", corpus_dir, tmp_path / "runs")


@pytest.fixture
def shards(small_recipe):
    """(the small recipe, its token shards): the pipeline's collect, prepare and tokenizer stages."""
    from fmforge.config import load_recipe
    from fmforge.pipeline import Pipeline

    r = load_recipe(small_recipe)
    p = Pipeline(r, verbose=False)
    for stage in ("collect", "prepare", "tokenizer"):
        getattr(p, stage)()
    return r, p.stage_dir("tokenizer") / "shards"


@pytest.fixture(scope="session")
def prepared(corpus_dir, tmp_path_factory) -> Path:
    """The small corpus collected into a document table (read-only for tests)."""
    from fmforge.data.collect import collect

    out = tmp_path_factory.mktemp("prepared")
    collect([str(corpus_dir)], ["*.py"], out)
    return out
