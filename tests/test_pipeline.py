"""The whole pipeline on a small real corpus: stages run, then are skipped when up to date."""
import json
import subprocess
import sys

from fmforge.config import load_recipe
from fmforge.pipeline import STAGES, Pipeline
from fmforge.tokenizer.encode import is_validation
from fmforge.tokenizer.shards import open_split


def run(recipe, *sets, force=False):
    p = Pipeline(load_recipe(recipe, list(sets)), force=force, verbose=False)
    report = p.run_all()
    return p, report


def test_run_then_skip_then_partial_rerun(small_recipe):
    p, report = run(small_recipe)
    assert [r.name for r in p.runs] == STAGES and not any(r.skipped for r in p.runs)
    for key in ("val_bpb", "gzip_bpb", "xz_bpb", "params", "tokens_trained", "sample"):
        assert report[key] is not None, key
    assert report["tokens_trained"] == 6 * 4 * 64
    saved = json.loads((p.dir / "report.json").read_text())
    assert saved["val_bpb"] == report["val_bpb"] and (p.dir / "report.md").exists()

    p2, report2 = run(small_recipe)
    assert all(r.skipped for r in p2.runs)
    assert report2["val_bpb"] == report["val_bpb"]

    # a train-only change redoes train and what depends on it, not the data stages
    p3, _ = run(small_recipe, "train.max_steps=7")
    assert {r.name for r in p3.runs if not r.skipped} == {"train", "eval", "sample"}

    p4, _ = run(small_recipe, "train.max_steps=7", force=True)
    assert not any(r.skipped for r in p4.runs)


def test_split_is_deterministic_and_disjoint(small_recipe):
    p, _ = run(small_recipe)
    shards = p.dir / "tokenizer" / "shards"
    train_docs = {bytes(s.doc(i)) for s in open_split(shards, "train") for i in range(len(s))}
    val_docs = {bytes(s.doc(i)) for s in open_split(shards, "val") for i in range(len(s))}
    assert train_docs and val_docs and not train_docs & val_docs
    before = {f.name: f.read_bytes() for f in shards.glob("*.bin")}
    run(small_recipe, force=True)
    assert before == {f.name: f.read_bytes() for f in shards.glob("*.bin")}
    # membership depends on the document id only
    ids = [f"doc-{i}" for i in range(2000)]
    frac = sum(is_validation(i, 0.1) for i in ids) / len(ids)
    assert 0.07 < frac < 0.13
    assert [is_validation(i, 0.1) for i in ids] == [is_validation(i, 0.1) for i in ids]


def test_cli_run_prints_report_table(small_recipe):
    out = subprocess.run([sys.executable, "-m", "fmforge", "run", "--recipe", str(small_recipe)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "val bits/byte (model)" in out.stdout and "gzip -9" in out.stdout
    # the small recipe scores eval.max_docs = 4 of its validation documents: report.md says so
    run_dir = small_recipe.parent / "runs" / "t"
    n_val = sum(len(s) for s in open_split(run_dir / "tokenizer" / "shards", "val"))
    assert n_val > 4 and f"| val documents scored | 4 of {n_val:,} |" in (run_dir / "report.md").read_text()
