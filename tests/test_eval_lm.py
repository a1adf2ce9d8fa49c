"""`fmforge eval --model` on what a real run leaves behind: its sharded (DCP) checkpoints, its
validation shards broken down by source, and documents longer than the context scored in
sliding windows. Expected values are computed here from the prepared documents, the
tokenizer and plain forward passes of the model."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from conftest import write_recipe

SOURCES = ("json", "email", "http", "logging")
VAL_FRACTION = 0.3


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus_dir) -> Path:
    """A trained run over four sources (one per stdlib package), checkpointed at steps 3 and 6."""
    from fmforge.cli import app

    tmp = tmp_path_factory.mktemp("lm")
    recipe = write_recipe(tmp / "r.yaml", corpus_dir, tmp / "runs",
                          data={"sources": [str(corpus_dir / s) for s in SOURCES], "val_fraction": VAL_FRACTION},
                          train={"max_steps": 6, "micro_batch": 4, "lr": 1e-3, "warmup_steps": 2, "threads": 1,
                                 "checkpoint_every": 3, "keep_checkpoints": 2})
    r = CliRunner().invoke(app, ["run", "--recipe", str(recipe)])
    assert r.exit_code == 0, r.output
    return tmp / "runs" / "t"


def _eval(model: Path, out: Path, *extra: str) -> dict:
    from fmforge.cli import app

    r = CliRunner().invoke(app, ["eval", "--model", str(model), "--out", str(out), *extra])
    assert r.exit_code == 0, r.output
    return json.loads((out / "eval.json").read_text())


def _arc(tmp: Path) -> str:
    f = tmp / "arc.jsonl"
    f.write_text("".join(json.dumps({"query": f"Question: which module parses {w}?", "choices": ["json", "email",
                                                                                               "http"], "gold": i % 3})
                         + "\n" for i, w in enumerate(["JSON", "mail", "headers", "logs"])))
    return f"arc_easy={f}"


def test_a_sharded_checkpoint_scores_as_the_final_model_and_an_earlier_one_differs(run, tmp_path):
    ckpts = sorted((run / "train" / "checkpoints").glob("step-*"))
    assert [c.name for c in ckpts] == ["step-00000003", "step-00000006"]
    assert (ckpts[-1] / "COMPLETE").is_file() and not (ckpts[-1] / "state.pt").exists()  # DCP, not one file
    args = ["--task", _arc(tmp_path), "--set", "eval.max_bytes=40000"]  # the first validation documents
    final = _eval(run, tmp_path / "final", *args, "--per-item")
    last = _eval(ckpts[-1], tmp_path / "last", *args, "--per-item")
    first = _eval(ckpts[0] / "train_state.pt", tmp_path / "first", *args)
    assert last["model_kind"] == first["model_kind"] == "checkpoint"
    # step 6 is the weights saved at the end (model.safetensors, another writer): same numbers
    assert last["lm"]["loss"] == pytest.approx(final["lm"]["loss"], rel=1e-6)
    assert last["lm"]["tokens"] == final["lm"]["tokens"] > 0 and final["lm"]["bytes"] < sum(
        len(d["text"].encode()) for d in _val_docs(run))
    items = lambda d: [json.loads(x)["loglik"] for x in (d / "items" / "arc_easy.jsonl").read_text().splitlines()]  # noqa: E731
    assert np.allclose(items(tmp_path / "last"), items(tmp_path / "final"), atol=1e-5)
    # step 3 is another model: the checkpoint's own weights were read
    assert abs(first["lm"]["loss"] - final["lm"]["loss"]) > 1e-3


def _val_docs(run: Path) -> list[dict]:
    """The validation documents, read from prepare/ with the split's own rule."""
    from fmforge.tokenizer.encode import is_validation

    rows = []
    for f in sorted((run / "prepare").glob("*.parquet")):
        rows += pq.read_table(f, columns=["id", "text", "source"]).to_pylist()
    return [r for r in rows if is_validation(r["id"], VAL_FRACTION)]


def _nats(model, ids: list[int], context: int, stride: int) -> float:
    """-sum log p of ids[1:], each token i given the tokens before it, at most `context` of them,
    from the start of the window that scores it (windows advance by `stride` after the first)."""
    total, ends = 0.0, []
    end = min(len(ids) - 1, context)  # the first window scores targets 1..context
    ends.append((0, end))
    while end < len(ids) - 1:
        new = min(end + stride, len(ids) - 1)
        ends.append((end, new))
        end = new
    with torch.no_grad():
        for lo, hi in ends:  # targets lo+1..hi, read from ids[hi - context : hi] (or from 0)
            start = max(0, hi - context)
            x = torch.tensor([ids[start:hi]])
            logp = torch.log_softmax(model(x).float()[0], -1)
            total -= float(sum(logp[i - start - 1, ids[i]] for i in range(lo + 1, hi + 1)))
    return total


def test_held_out_loss_is_broken_down_by_the_sources_of_the_validation_documents(run, tmp_path):
    from fmforge.eval.load import load_for_eval

    res = _eval(run, tmp_path / "o")["lm"]
    docs = _val_docs(run)
    want = {}
    for d in docs:
        w = want.setdefault(d["source"], {"docs": 0, "bytes": 0, "texts": []})
        w["docs"] += 1
        w["bytes"] += len(d["text"].encode("utf-8"))
        w["texts"].append(d["text"])
    assert len(want) >= 2, "the fixture should put validation documents in several sources"
    assert set(res["sources"]) == set(want)
    lm = load_for_eval(run).lm
    ctx = lm.model.cfg.context_length
    total = 0.0
    for src, w in want.items():
        got = res["sources"][src]
        assert (got["docs"], got["bytes"]) == (w["docs"], w["bytes"])
        nats = sum(_nats(lm.model, lm.encode(t), ctx, ctx) for t in w["texts"])
        assert got["bpb"] == pytest.approx(nats / math.log(2) / w["bytes"], rel=1e-4)
        total += nats
    assert res["bpb"] == pytest.approx(total / math.log(2) / sum(w["bytes"] for w in want.values()), rel=1e-4)
    assert res["docs"] == len(docs)
    md = (tmp_path / "o" / "eval.md").read_text()
    assert all(src in md for src in want)


def test_the_breakdown_is_left_out_when_prepare_no_longer_matches_the_shards(run, tmp_path):
    import shutil

    copy = tmp_path / "t"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    f = sorted((copy / "prepare").glob("*.parquet"))[0]
    f.write_bytes(f.read_bytes() + b"\0")  # prepare/ changed after the shards were encoded
    res = _eval(copy, tmp_path / "o")["lm"]
    assert "sources" not in res and "not the document set" in res["sources_note"]
    assert res["docs"] == len(_val_docs(run)) and res["bpb"] > 0


@pytest.mark.parametrize("stride", [1, 20, None])
def test_long_documents_are_scored_in_sliding_windows(run, tmp_path, stride):
    from fmforge.eval.load import load_for_eval

    lm = load_for_eval(run).lm
    ctx = lm.model.cfg.context_length
    text = (Path(__file__).parent / "conftest.py").read_text()[:1500]
    ids = lm.encode(text)
    assert len(ids) > 2 * ctx  # longer than the context: several windows
    f = tmp_path / "long.txt"
    f.write_text(text)
    extra = ["--set", f"eval.stride={stride}"] if stride else []
    res = _eval(run, tmp_path / "o", "--text", str(f), *extra)["lm"]
    nats = _nats(lm.model, ids, ctx, stride or ctx)
    assert res["stride"] == (stride or ctx) and res["tokens"] == len(ids) - 1
    assert res["bpb"] == pytest.approx(nats / math.log(2) / len(text.encode()), rel=1e-4)
    if stride == 1:  # each token past the first window reads exactly `context` tokens
        assert res["loss"] != pytest.approx(_nats(lm.model, ids, ctx, ctx) / (len(ids) - 1), rel=1e-6)


def test_the_eval_stage_and_the_report_break_held_out_bpb_down_by_source(run):
    import gzip

    from fmforge.cli import app

    ev = json.loads((run / "eval" / "eval.json").read_text())
    docs = _val_docs(run)[:4]  # the recipe's eval.max_docs, in the shards' order
    by: dict[str, list[bytes]] = {}
    for d in docs:
        by.setdefault(d["source"], []).append(d["text"].encode("utf-8"))
    assert set(ev["sources"]) == set(by)
    for src, texts in by.items():
        got = ev["sources"][src]
        assert (got["docs"], got["bytes"]) == (len(texts), sum(map(len, texts)))
        gz = sum(len(gzip.compress(t, compresslevel=9, mtime=0)) for t in texts)
        assert got["gzip_bpb"] == pytest.approx(8 * gz / got["bytes"])
    # the sources' nats add up to the whole
    nats = sum(s["val_bpb"] * s["bytes"] for s in ev["sources"].values())
    assert nats == pytest.approx(ev["val_bpb"] * ev["bytes"], rel=1e-9)
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    page = (run / "report" / "report.html").read_text()
    assert "by source" in page and all(f"<td>{src}</td>" in page for src in by)


def test_text_files_jsonl_zst_rows_by_their_source_field_and_gzipped_plain_text(run, tmp_path):
    import gzip

    zstd = pytest.importorskip("zstandard")
    from fmforge.eval.load import load_for_eval

    rows = [{"text": "import json\nprint(json.dumps({}))\n", "source": "code"},
            {"text": "The email package parses mail.", "source": "prose"},
            {"text": "def f(x):\n    return x\n", "source": "code"}]
    f = tmp_path / "held.jsonl.zst"
    f.write_bytes(zstd.ZstdCompressor().compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    g = tmp_path / "plain.txt.gz"
    g.write_bytes(gzip.compress("logging.info('x')\n".encode()))
    res = _eval(run, tmp_path / "o", "--text", str(f), "--text", str(g))["lm"]
    lm = load_for_eval(run).lm
    ctx = lm.model.cfg.context_length
    want = {"code": [rows[0]["text"], rows[2]["text"]], "prose": [rows[1]["text"]], str(g): ["logging.info('x')\n"]}
    assert set(res["sources"]) == set(want)
    for src, texts in want.items():
        n_bytes = sum(len(t.encode()) for t in texts)
        nats = sum(_nats(lm.model, lm.encode(t), ctx, ctx) for t in texts)
        assert res["sources"][src]["docs"] == len(texts) and res["sources"][src]["bytes"] == n_bytes
        assert res["sources"][src]["bpb"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-4)


def _eval_stage_on_a_copy(run: Path, tmp: Path, change=None):
    """The eval stage (`fmforge eval --recipe`) on a copy of the run, every validation
    document scored; `change(copy)` first. The other stages are up to date (copy2 keeps the
    files' times); (the CLI's result, the copy)."""
    import shutil

    import yaml

    from fmforge.cli import app

    copy = tmp / "runs" / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints", "eval", "report"))
    recipe = yaml.safe_load((run.parent.parent / "r.yaml").read_text())
    recipe["out_dir"], recipe["eval"]["max_docs"] = str(tmp / "runs"), 100_000
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    if change:
        change(copy)
    return CliRunner().invoke(app, ["eval", "--recipe", str(tmp / "r.yaml")]), copy


def test_the_eval_stage_and_eval_model_give_the_same_breakdown_by_source(run, tmp_path):
    r, copy = _eval_stage_on_a_copy(run, tmp_path)
    assert r.exit_code == 0, r.output
    assert "[train] up to date" in r.output  # the same model
    stage = json.loads((copy / "eval" / "eval.json").read_text())
    model = _eval(copy, tmp_path / "o")["lm"]
    want: dict[str, list[int]] = {}  # computed here from prepare/ with the split's own rule
    for d in _val_docs(run):
        want.setdefault(d["source"], []).append(len(d["text"].encode("utf-8")))
    assert len(want) >= 2
    assert set(stage["sources"]) == set(model["sources"]) == set(want)
    for src, sizes in want.items():
        s, m = stage["sources"][src], model["sources"][src]
        assert (s["docs"], s["bytes"]) == (m["docs"], m["bytes"]) == (len(sizes), sum(sizes))
        assert s["tokens"] == m["tokens"]
        assert s["val_bpb"] == pytest.approx(m["bpb"], rel=1e-5)
        assert s["val_loss"] == pytest.approx(m["loss"], rel=1e-5)
    assert (stage["docs"], stage["bytes"]) == (model["docs"], model["bytes"])


def test_the_eval_stage_names_the_prepare_file_that_no_longer_matches_the_shards(run, tmp_path):
    from fmforge.errors import UserError

    def change(copy: Path) -> None:  # prepare/ changed after the shards were encoded
        f = sorted((copy / "prepare").glob("*.parquet"))[0]
        f.write_bytes(f.read_bytes() + b"\0")

    r, copy = _eval_stage_on_a_copy(run, tmp_path, change)
    assert isinstance(r.exception, UserError), r.output
    f = sorted((copy / "prepare").glob("*.parquet"))[0]
    assert "not the document set" in str(r.exception) and f.name in str(r.exception)
