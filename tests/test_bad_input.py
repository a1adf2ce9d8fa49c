"""Every verb, through the real CLI in a subprocess, on broken, empty, binary, truncated,
oversized and adversarial input.

Each case must end the way a user mistake ends (docs: errors): exit code 2; one line on
stderr that starts with "error:", comes last and names the file, line, field or flag; no
traceback; every input byte for byte as it was; and no partial output (the --out folder is
absent or holds only fmforge's bookkeeping, `.fmforge.json` and `.lock`).

A case is a function building its input in its own folder (the subprocess's working
directory) and returning a Case. The one trained run that eval/sample/train cases need is
made once per session (`fmforge run` on a tiny recipe, about ten seconds) and copied by the
cases that damage it, so the shared copy is never touched.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import STDLIB, write_recipe

BOOKKEEPING = {".fmforge.json", ".lock"}
BINARY = bytes(range(256)) * 64  # every byte value, NULs and invalid UTF-8 included


@dataclass
class Case:
    args: list[str]
    words: list[str]  # each must appear in the error line
    inputs: list[Path] = field(default_factory=list)  # must be unchanged afterwards
    out: Path | None = None  # must be absent or hold no data files afterwards


@dataclass
class Fixtures:
    root: Path
    corpus: Path  # a folder of small .py files
    recipe: Path  # the tiny recipe that made `run`
    run: Path  # runs/t of that recipe: collect, prepare, tokenizer, train, eval, sample

    @property
    def prepared(self) -> Path:
        return self.run / "prepare"

    @property
    def tokenizer(self) -> Path:
        return self.run / "tokenizer"


def fmforge(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "FMFORGE_HARDWARE": "", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "fmforge", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def fx(tmp_path_factory) -> Fixtures:
    root = tmp_path_factory.mktemp("bad-input")
    corpus = root / "corpus"
    corpus.mkdir()
    for f in sorted((STDLIB / "json").glob("*.py")) + sorted((STDLIB / "email").glob("*.py"))[:20]:
        shutil.copyfile(f, corpus / f"{f.parent.name}_{f.name}")
    recipe = write_recipe(root / "recipe.yaml", corpus, root / "runs",
                          train={"max_steps": 2, "micro_batch": 2, "lr": 1e-3, "warmup_steps": 1, "threads": 1})
    res = fmforge(["run", "--recipe", recipe], cwd=root, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return Fixtures(root, corpus, recipe, root / "runs" / "t")


# ---------------------------------------------------------------- input builders


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def parquet(path: Path, columns: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def jsonl_gz_truncated(path: Path) -> Path:
    lines = "".join(json.dumps({"text": f"document {i} " * 40}) + "\n" for i in range(200)).encode()
    data = gzip.compress(lines)
    return write(path, data[: len(data) // 2])


def copy_run(t: Path, fx: Fixtures) -> tuple[Path, Path]:
    """A private copy of the trained run and a recipe that points at it (same data, same hashes)."""
    shutil.copytree(fx.run, t / "runs" / "t")
    recipe = yaml.safe_load(fx.recipe.read_text())
    recipe["out_dir"] = str(t / "runs")
    return write(t / "recipe.yaml", yaml.safe_dump(recipe)), t / "runs" / "t"


def recipe_with(t: Path, fx: Fixtures, name: str = "r.yaml", **over) -> Path:
    return write_recipe(t / name, fx.corpus, t / "runs", **over)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ---------------------------------------------------------------- the cases

CASES: dict[str, Callable[[Path, Fixtures], Case]] = {}


def case(name: str):
    def register(fn):
        assert name not in CASES, name
        CASES[name] = fn
        return fn
    return register


# --- recipes: every verb that takes --recipe reads it through fmforge.options

@case("config show: recipe not YAML")
def _(t, fx):
    r = write(t / "broken.yaml", "model: {d_model: [unclosed\n  : :\n")
    return Case(["config", "show", "--recipe", r], ["broken.yaml"], [r])


@case("config show: recipe binary")
def _(t, fx):
    r = write(t / "binary.yaml", BINARY)
    return Case(["config", "show", "--recipe", r], ["binary.yaml"], [r])


@case("config show: recipe a list")
def _(t, fx):
    r = write(t / "list.yaml", "- name: x\n- name: y\n")
    return Case(["config", "show", "--recipe", r], ["list.yaml"], [r])


@case("config show: recipe wrong field")
def _(t, fx):
    r = write(t / "typo.yaml", "name: x\nmodel:\n  d_modell: 64\n")
    return Case(["config", "show", "--recipe", r], ["d_modell"], [r])


@case("config show: recipe is a folder")
def _(t, fx):
    return Case(["config", "show", "--recipe", folder(t / "recipes")], ["recipes"])


@case("config show: --set wrong type")
def _(t, fx):
    return Case(["config", "show", "--set", "model.d_model=wide"], ["model.d_model"])


@case("config show: --set without =")
def _(t, fx):
    return Case(["config", "show", "--set", "model.d_model"], ["--set"])


@case("run: recipe file missing")
def _(t, fx):
    return Case(["run", "--recipe", t / "nowhere.yaml"], ["nowhere.yaml"])


# A recipe's name is checked when the recipe loads, so even `config show` refuses it (and
# `run` never starts work in a folder outside runs/).
@case("config show: recipe name escapes runs/")
def _(t, fx):
    r = write_recipe(t / "escape.yaml", fx.corpus, t / "a" / "runs", name="../../escaped")
    return Case(["config", "show", "--recipe", r], ["name"], [r])


@case("config show: recipe name an absolute path")
def _(t, fx):
    r = write_recipe(t / "abs.yaml", fx.corpus, t / "runs", name=str(t / "elsewhere"))
    return Case(["config", "show", "--recipe", r], ["name"], [r])


@case("run: data.sources an empty folder")
def _(t, fx):
    empty = folder(t / "empty")
    r = write_recipe(t / "r.yaml", empty, t / "runs")
    return Case(["run", "--recipe", r], ["empty"], [r], out=t / "runs" / "t" / "collect")


@case("run: data.include matches nothing")
def _(t, fx):
    r = recipe_with(t, fx, data={"sources": [str(fx.corpus)], "include": ["*.md"], "val_fraction": 0.15})
    return Case(["run", "--recipe", r], ["data.include"], [r, fx.corpus], out=t / "runs" / "t" / "collect")


# --- data collect

@case("data collect: empty folder")
def _(t, fx):
    src = folder(t / "empty")
    return Case(["data", "collect", src, "--out", t / "out"], ["empty"], [src], out=t / "out")


@case("data collect: binary file named .jsonl")
def _(t, fx):
    src = write(t / "shard.jsonl", BINARY)
    return Case(["data", "collect", src, "--out", t / "out"], ["shard.jsonl"], [src], out=t / "out")


@case("data collect: folder of binary .jsonl shards")
def _(t, fx):
    src = folder(t / "shards")
    write(src / "a.jsonl", BINARY)
    write(src / "b.jsonl", BINARY[::-1])
    return Case(["data", "collect", src, "--out", t / "out"], ["shards"], [src], out=t / "out")


@case("data collect: truncated .jsonl.gz")
def _(t, fx):
    src = jsonl_gz_truncated(t / "part.jsonl.gz")
    return Case(["data", "collect", src, "--out", t / "out", "--strict"], ["part.jsonl.gz"], [src], out=t / "out")


@case("data collect: jsonl without the text field")
def _(t, fx):
    src = write(t / "docs.jsonl", "".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(5)))
    return Case(["data", "collect", src, "--out", t / "out"], ["docs.jsonl", "--text-field"], [src], out=t / "out")


@case("data collect: huge line cut short")
def _(t, fx):
    src = write(t / "huge.jsonl", '{"text": "' + "a" * (16 << 20))  # 16 MiB, no closing quote, no newline
    return Case(["data", "collect", src, "--out", t / "out", "--strict"], ["huge.jsonl"], [src], out=t / "out")


@case("data collect: parquet without a text column")
def _(t, fx):
    src = parquet(t / "user.parquet", {"body": ["one", "two"], "url": ["a", "b"]})
    return Case(["data", "collect", src, "--out", t / "out"], ["body", "--text-field"], [src], out=t / "out")


@case("data collect: folder with a parquet without a text column")
def _(t, fx):
    src = folder(t / "tables")
    parquet(src / "user.parquet", {"body": ["one", "two"]})
    return Case(["data", "collect", src, "--out", t / "out"], ["body", "--text-field"], [src], out=t / "out")


@case("data collect: parquet that is not parquet")
def _(t, fx):
    src = write(t / "fake.parquet", b"PAR1" + BINARY)
    return Case(["data", "collect", src, "--out", t / "out"], ["fake.parquet"], [src], out=t / "out")


@case("data collect: source missing")
def _(t, fx):
    return Case(["data", "collect", t / "nowhere", "--out", t / "out"], ["nowhere"], out=t / "out")


@case("data collect: --out equal to the input")
def _(t, fx):
    src = shutil.copytree(fx.corpus, t / "corpus")
    return Case(["data", "collect", src, "--out", src], ["--out"], [src])


@case("data collect: --out inside the input")
def _(t, fx):
    src = shutil.copytree(fx.corpus, t / "corpus")
    return Case(["data", "collect", src, "--out", src / "collected"], ["--out"], [src], out=src / "collected")


@case("data collect: --out is a file")
def _(t, fx):
    dest = write(t / "notes.txt", "my notes\n")
    return Case(["data", "collect", fx.corpus, "--out", dest], ["--out", "notes.txt"], [fx.corpus, dest])


@case("data collect: --out holds the user's files")
def _(t, fx):
    dest = folder(t / "mine")
    write(dest / "thesis.parquet", b"my own parquet")
    return Case(["data", "collect", fx.corpus, "--out", dest], ["--out"], [fx.corpus, dest])


# --- data prepare

@case("data prepare: empty folder")
def _(t, fx):
    src = folder(t / "empty")
    return Case(["data", "prepare", src, "--out", t / "out"], ["empty"], [src], out=t / "out")


@case("data prepare: a file where a folder is expected")
def _(t, fx):
    src = write(t / "docs.txt", "hello\n")
    return Case(["data", "prepare", src, "--out", t / "out"], ["docs.txt"], [src], out=t / "out")


@case("data prepare: parquet without a text column")
def _(t, fx):
    src = folder(t / "tables")
    parquet(src / "user.parquet", {"body": ["one", "two"]})
    return Case(["data", "prepare", src, "--out", t / "out"], ["user.parquet", "text"], [src], out=t / "out")


@case("data prepare: parquet that is not parquet")
def _(t, fx):
    src = folder(t / "tables")
    write(src / "docs-00000.parquet", BINARY)
    return Case(["data", "prepare", src, "--out", t / "out"], ["docs-00000.parquet"], [src], out=t / "out")


@case("data prepare: truncated parquet")
def _(t, fx):
    src = shutil.copytree(fx.run / "collect", t / "collected")
    for p in src.glob("*.parquet"):
        truncate(p)
    return Case(["data", "prepare", src, "--out", t / "out"], ["docs-00000.parquet"], [src], out=t / "out")


@case("data prepare: --out equal to the input")
def _(t, fx):
    src = shutil.copytree(fx.run / "collect", t / "collected")
    return Case(["data", "prepare", src, "--out", src], ["--out"], [src])


@case("data prepare: --out holds the user's parquet")
def _(t, fx):
    dest = folder(t / "mine")
    parquet(dest / "keep-me.parquet", {"text": ["my own document"]})
    return Case(["data", "prepare", fx.run / "collect", "--out", dest], ["--out"], [fx.run / "collect", dest])


@case("data prepare: --workers negative")
def _(t, fx):
    return Case(["data", "prepare", fx.run / "collect", "--out", t / "out", "--workers", "-2"], ["--workers"],
                [fx.run / "collect"], out=t / "out")


@case("data prepare: recipe wrong field")
def _(t, fx):
    r = write(t / "typo.yaml", "data:\n  min_charz: 5\n")
    return Case(["data", "prepare", fx.run / "collect", "--out", t / "out", "--recipe", r], ["min_charz"],
                [r, fx.run / "collect"], out=t / "out")


# --- tokenizer train / encode / report

@case("tokenizer train: empty folder")
def _(t, fx):
    src = folder(t / "empty")
    return Case(["tokenizer", "train", "--data", src, "--out", t / "out"], ["empty"], [src], out=t / "out")


@case("tokenizer train: parquet without a text column")
def _(t, fx):
    src = folder(t / "tables")
    parquet(src / "user.parquet", {"body": ["one", "two"]})
    return Case(["tokenizer", "train", "--data", src, "--out", t / "out"], ["text"], [src], out=t / "out")


@case("tokenizer train: parquet that is not parquet")
def _(t, fx):
    src = folder(t / "tables")
    write(src / "docs-00000.parquet", BINARY)
    return Case(["tokenizer", "train", "--data", src, "--out", t / "out"], ["docs-00000.parquet"], [src],
                out=t / "out")


@case("tokenizer train: vocab smaller than the bytes")
def _(t, fx):
    return Case(["tokenizer", "train", "--data", fx.prepared, "--out", t / "out", "--vocab-size", "10"],
                ["vocab"], [fx.prepared], out=t / "out")


@case("tokenizer train: --digits 2")
def _(t, fx):
    return Case(["tokenizer", "train", "--data", fx.prepared, "--out", t / "out", "--digits", "2"],
                ["digits"], [fx.prepared], out=t / "out")


@case("tokenizer train: --normalize unknown")
def _(t, fx):
    return Case(["tokenizer", "train", "--data", fx.prepared, "--out", t / "out", "--normalize", "NFX"],
                ["normalize"], [fx.prepared], out=t / "out")


@case("tokenizer train: --out equal to --data")
def _(t, fx):
    src = shutil.copytree(fx.prepared, t / "prepared")
    return Case(["tokenizer", "train", "--data", src, "--out", src], ["--out"], [src])


@case("tokenizer encode: tokenizer.json garbage")
def _(t, fx):
    tok = write(t / "tok" / "tokenizer.json", BINARY)
    return Case(["tokenizer", "encode", "--tokenizer", tok, "--data", fx.prepared, "--out", t / "out"],
                ["tokenizer.json"], [tok, fx.prepared], out=t / "out")


@case("tokenizer encode: tokenizer.json truncated")
def _(t, fx):
    tok = shutil.copytree(fx.tokenizer, t / "tok", ignore=shutil.ignore_patterns("shards"))
    truncate(tok / "tokenizer.json")
    return Case(["tokenizer", "encode", "--tokenizer", tok, "--data", fx.prepared, "--out", t / "out"],
                ["tokenizer.json"], [tok, fx.prepared], out=t / "out")


@case("tokenizer encode: tokenizer folder empty")
def _(t, fx):
    tok = folder(t / "tok")
    return Case(["tokenizer", "encode", "--tokenizer", tok, "--data", fx.prepared, "--out", t / "out"],
                ["tokenizer.json"], [tok, fx.prepared], out=t / "out")


@case("tokenizer encode: data parquet that is not parquet")
def _(t, fx):
    src = folder(t / "tables")
    write(src / "docs-00000.parquet", BINARY)
    return Case(["tokenizer", "encode", "--tokenizer", fx.tokenizer, "--data", src, "--out", t / "out"],
                ["docs-00000.parquet"], [src, fx.tokenizer], out=t / "out")


@case("tokenizer encode: --out equal to --data")
def _(t, fx):
    src = shutil.copytree(fx.prepared, t / "prepared")
    return Case(["tokenizer", "encode", "--tokenizer", fx.tokenizer, "--data", src, "--out", src],
                ["--out"], [src, fx.tokenizer])


@case("tokenizer report: tokenizer.json garbage")
def _(t, fx):
    tok = write(t / "tok" / "tokenizer.json", "{not json")
    return Case(["tokenizer", "report", "--tokenizer", tok, "--data", fx.prepared], ["tokenizer.json"],
                [tok, fx.prepared])


@case("tokenizer report: data binary .jsonl")
def _(t, fx):
    data = write(t / "held.jsonl", BINARY)
    return Case(["tokenizer", "report", "--tokenizer", fx.tokenizer, "--data", data], ["held.jsonl"],
                [data, fx.tokenizer])


@case("tokenizer report: data missing")
def _(t, fx):
    return Case(["tokenizer", "report", "--tokenizer", fx.tokenizer, "--data", t / "nowhere.txt"],
                ["nowhere.txt"], [fx.tokenizer])


@case("tokenizer report: --json is the input")
def _(t, fx):
    data = write(t / "held.txt", "def f(x):\n    return x\n" * 50)
    return Case(["tokenizer", "report", "--tokenizer", fx.tokenizer, "--data", data, "--json", data],
                ["--json"], [data, fx.tokenizer])


# --- train

@case("train: --set train.max_steps negative")
def _(t, fx):
    return Case(["train", "--recipe", fx.recipe, "--set", "train.max_steps=-1"], ["train.max_steps"],
                [fx.recipe, fx.run])


@case("train: --set train.lr not a number")
def _(t, fx):
    return Case(["train", "--recipe", fx.recipe, "--set", "train.lr=fast"], ["train.lr"], [fx.recipe, fx.run])


@case("train: --out is a file")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    dest = write(t / "notes.txt", "my notes\n")
    return Case(["train", "--recipe", recipe, "--out", dest], ["--out", "notes.txt"], [recipe, dest])


@case("train: --out is the tokenizer folder")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    return Case(["train", "--recipe", recipe, "--out", run / "tokenizer"], ["--out"], [recipe, run / "tokenizer"])


# --- eval and sample on a damaged run (eval.max_docs changed so eval runs again)

EVAL = ["--set", "eval.max_docs=3"]


@case("eval: model.safetensors garbage")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    write(run / "train" / "model.safetensors", BINARY)
    return Case(["eval", "--recipe", recipe, *EVAL], ["model.safetensors", "fmforge train"], [recipe, run / "train"])


@case("eval: model.safetensors truncated")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    truncate(run / "train" / "model.safetensors", 0.7)
    return Case(["eval", "--recipe", recipe, *EVAL], ["model.safetensors", "fmforge train"], [recipe, run / "train"])


@case("eval: model.json truncated")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    truncate(run / "train" / "model.json")
    return Case(["eval", "--recipe", recipe, *EVAL], ["model.json", "fmforge train"], [recipe, run / "train"])


@case("eval: --task and --out without --model")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    return Case(["eval", "--recipe", recipe, "--task", "hellaswag", "--out", t / "e"], ["--task", "--out", "--model"],
                [recipe, run], t / "e")


@case("sample: no trained run")
def _(t, fx):
    r = recipe_with(t, fx)
    return Case(["sample", "--recipe", r, "--prompt", "def f("], ["model.json", "fmforge train"], [r])


@case("sample: model.safetensors missing")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    (run / "train" / "model.safetensors").unlink()
    return Case(["sample", "--recipe", recipe], ["model.safetensors", "fmforge train"], [recipe, run])


@case("sample: model.safetensors garbage")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    write(run / "train" / "model.safetensors", b"\x00" * 7)
    return Case(["sample", "--recipe", recipe], ["model.safetensors", "fmforge train"], [recipe, run])


@case("sample: model.json wrong field")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    cfg = json.loads((run / "train" / "model.json").read_text())
    write(run / "train" / "model.json", json.dumps({**cfg, "n_layers": "many"}))
    return Case(["sample", "--recipe", recipe], ["model.json", "n_layers"], [recipe, run])


@case("sample: tokenizer.json garbage")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    write(run / "tokenizer" / "tokenizer.json", BINARY)
    return Case(["sample", "--recipe", recipe], ["tokenizer.json"], [recipe, run])


@case("sample: tokenizer folder missing")
def _(t, fx):
    recipe, run = copy_run(t, fx)
    shutil.rmtree(run / "tokenizer")
    return Case(["sample", "--recipe", recipe], ["tokenizer"], [recipe, run])


# --- cost

EST = ["cost", "estimate", "--params", "7e9", "--tokens", "1e12", "--gpu", "h100"]


@case("cost plan: --gpus 0")
def _(t, fx):
    return Case(["cost", "plan", "--budget-usd", "1000", "--gpus", "0"], ["--gpus"])


@case("cost plan: --gpus -3")
def _(t, fx):
    return Case(["cost", "plan", "--budget-usd", "1000", "--gpus", "-3"], ["--gpus"])


@case("cost plan: --price 0")
def _(t, fx):
    return Case(["cost", "plan", "--budget-usd", "1000", "--price", "0"], ["--price"])


@case("cost estimate: --gpus 0")
def _(t, fx):
    return Case(EST + ["--gpus", "0"], ["--gpus"])


@case("cost estimate: --price -3")
def _(t, fx):
    return Case(EST + ["--price", "-3"], ["--price"])


@case("cost estimate: --tokens 0")
def _(t, fx):
    return Case(["cost", "estimate", "--params", "7e9", "--tokens", "0", "--gpu", "h100"], ["--tokens"])


@case("cost estimate: --mfu 1.5")
def _(t, fx):
    return Case(EST + ["--mfu", "1.5"], ["--mfu"])


@case("cost estimate: --params not a number")
def _(t, fx):
    return Case(["cost", "estimate", "--params", "lots", "--tokens", "1e12"], ["--params"])


@case("cost estimate: recipe not YAML")
def _(t, fx):
    r = write(t / "broken.yaml", "cost: {gpus: [\n")
    return Case(["cost", "estimate", "--recipe", r, "--tokens", "1e9"], ["broken.yaml"], [r])


@case("cost estimate: phases file binary")
def _(t, fx):
    p = write(t / "phases.yaml", BINARY)
    return Case(["cost", "estimate", "--phases", p], ["phases.yaml"], [p])


@case("cost estimate: phases devices 0")
def _(t, fx):
    p = write(t / "phases.yaml", "phases:\n  - {accelerator: tpu-v4, devices: 0, hours: 5}\n")
    return Case(["cost", "estimate", "--phases", p], ["phases[0].devices"], [p])


@case("cost estimate: --catalog not YAML")
def _(t, fx):
    c = write(t / "hw.yaml", "accelerators: {h100: [\n")
    return Case(EST + ["--catalog", c], ["hw.yaml"], [c])


@case("cost estimate: --from-run empty folder")
def _(t, fx):
    d = folder(t / "run")
    return Case(EST + ["--from-run", d], ["metrics.jsonl"], [d])


@case("cost serve: bench truncated")
def _(t, fx):
    b = write(t / "bench.json", json.dumps({"results": [{"tokens_per_s": 100.0}] * 5})[:30])
    return Case(["cost", "serve", "--from-bench", b, "--price", "1"], ["bench.json"], [b])


@case("cost serve: bench binary")
def _(t, fx):
    b = write(t / "bench.json", BINARY)
    return Case(["cost", "serve", "--from-bench", b, "--price", "1"], ["bench.json"], [b])


@case("cost serve: --utilization 0")
def _(t, fx):
    b = write(t / "bench.json", json.dumps({"tokens_per_s": 100.0}))
    return Case(["cost", "serve", "--from-bench", b, "--price", "1", "--utilization", "0"], ["--utilization"], [b])


# ---------------------------------------------------------------- the checks


def digest(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under each path (and the listing itself, so a new or lost file shows)."""
    out = {}
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        if not root.exists():
            out[str(root)] = "absent"
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def data_files(out: Path) -> list[str]:
    if not out.exists():
        return []
    if out.is_file():
        return [out.name]
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name not in BOOKKEEPING)


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(name, fx, tmp_path):
    c = CASES[name](tmp_path, fx)
    shared = digest([fx.corpus, fx.recipe, fx.run])
    before = digest(c.inputs)
    existed = c.out is not None and c.out.exists()
    res = fmforge(c.args, cwd=tmp_path)

    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 2, f"exit {res.returncode}; stderr: {res.stderr[-2000:]}"
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"want one last 'error:' line; stderr:\n{res.stderr[-2000:]}"
    missing = [w for w in c.words if w not in errors[0]]
    assert not missing, f"the message does not name {missing}: {errors[0]}"
    assert digest(c.inputs) == before, "an input was changed"
    assert digest([fx.corpus, fx.recipe, fx.run]) == shared, "the shared fixtures were changed"
    if c.out is not None and not existed:
        assert data_files(c.out) == [], f"partial output left in {c.out}"
