"""A small real run (fmforge run) with downstream tasks during training and at the end,
then `fmforge report` on it and on two runs side by side."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_recipe


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, corpus_dir) -> Path:
    from fmforge.cli import app

    tmp = tmp_path_factory.mktemp("rep")
    arc = tmp / "arc.jsonl"
    arc.write_text("".join(json.dumps({"query": f"Question: which module parses {w}?", "choices": ["json", "email",
                                                                                                  "http"],
                                       "gold": i % 3}) + "\n" for i, w in enumerate(["JSON", "mail", "headers"])))
    recipe = write_recipe(tmp / "r.yaml", corpus_dir, tmp / "runs",
                          train={"max_steps": 6, "micro_batch": 4, "lr": 1e-3, "warmup_steps": 2, "threads": 1,
                                 "eval_every": 3},
                          eval={"max_new_tokens": 8, "max_docs": 4, "every_steps": 3, "tasks": [f"arc_easy={arc}"]})
    r = CliRunner().invoke(app, ["run", "--recipe", str(recipe)])
    assert r.exit_code == 0, r.output
    return tmp / "runs" / "t"


def test_tasks_are_scored_during_training_and_by_the_eval_stage(small_run):
    lines = [json.loads(x) for x in (small_run / "train" / "metrics.jsonl").read_text().splitlines()]
    task_lines = [x["eval"] for x in lines if "eval" in x and "tasks" in x["eval"]]
    assert [t["step"] for t in task_lines] == [3, 6]
    assert all(t["tasks"]["arc_easy"]["n"] == 3 and t["core"] is not None for t in task_lines)
    ev = json.loads((small_run / "eval" / "eval.json").read_text())
    assert ev["tasks"]["arc_easy"]["n"] == 3 and "val_bpb" in ev
    # the eval stage and the last in-training score agree: the same final weights, the same items
    assert ev["tasks"]["arc_easy"]["acc"] == task_lines[-1]["tasks"]["arc_easy"]["acc"]


def _check_report(html_file: Path, want=("loss.png", "bpb.png", "throughput.png", "tasks.png")) -> str:
    page = html_file.read_text()
    pngs = re.findall(r'<img src="([^"]+)"', page)
    assert set(want) <= set(pngs)
    for p in pngs:
        f = html_file.parent / p
        assert f.is_file() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http" not in re.sub(r"<td>[^<]*</td>", "", page)  # nothing fetched from anywhere
    return page


def test_report_renders_with_plots_tables_and_cost(small_run):
    from fmforge.cli import app

    r = CliRunner().invoke(app, ["report", str(small_run)])
    assert r.exit_code == 0, r.output
    page = _check_report(small_run / "report" / "report.html")
    for heading in ("Overview", "Data", "Tokenizer", "Evaluation", "Cost"):
        assert f"<h2>{heading}" in page
    assert "arc_easy" in page and "documents kept" in page and "bytes per token" in page


def test_report_compares_two_runs_and_refuses_a_folder_that_is_not_a_run(small_run, tmp_path):
    from fmforge.cli import app

    r = CliRunner().invoke(app, ["report", str(small_run), str(small_run), "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    page = _check_report(tmp_path / "cmp" / "report.html")
    assert page.count("<th>t</th>") >= 2
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "no training metrics" in str(r.exception)


@pytest.mark.slow  # a data, tokenizer, train, eval run: 20 s of CPU, over a minute on 2 loaded cores
def test_a_run_of_the_demo_recipe_gets_its_report(tmp_path, corpus_dir):
    """The built-in demo recipe (`fmforge run` without --recipe: tiny preset, Muon, WSD, no
    tasks), on the test corpus and a budget of a few steps instead of the standard library
    and 3.6M tokens."""
    from fmforge.cli import app

    sets = {"out_dir": tmp_path / "runs", "data.sources": f"[{corpus_dir}]", "tokenizer.vocab_size": 512,
            "train.max_tokens": 4 * 4096, "train.compile": "off", "train.threads": 1, "eval.max_docs": 4,
            "eval.max_new_tokens": 8}
    r = CliRunner().invoke(app, ["run", *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))])
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "demo"
    assert json.loads((run / "train" / "summary.json").read_text())["tokens"] == 4 * 4096
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    page = _check_report(run / "report" / "report.html", want=("loss.png", "bpb.png", "throughput.png"))
    assert "tasks.png" not in page and not (run / "report" / "tasks.png").exists()  # the demo scores no tasks
    ev = json.loads((run / "eval" / "eval.json").read_text())
    assert f"{ev['val_bpb']:,.4f}" in page and f"{ev['gzip_bpb']:,.4f}" in page
