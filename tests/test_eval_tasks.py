"""Task loaders, lm-eval's scoring rules, batching, and `fmforge eval --model` end to end."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import SHARED
from fmforge.config import ModelConfig, TokenizerConfig
from fmforge.eval.harness import centred, core_score, score_task
from fmforge.eval.loglik import LM
from fmforge.eval.tasks import Item, registry, resolve
from fmforge.eval.tasks.base import TaskError

EVAL = SHARED / "eval"


# ------------------------------------------------------------ every row of the full files

def _lines(path: Path) -> int:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


@pytest.mark.parametrize("name", [n for n, t in registry().items() if n != "mmlu"])
def test_each_loader_reads_every_row_of_the_full_file(name):
    task = registry()[name]
    path = EVAL / task.default_file
    if not path.is_file():
        pytest.skip(f"{path} absent (the shared data is not beside this checkout)")
    assert len(task.load(path)) == _lines(path)


def test_mmlu_reads_every_row_of_every_subject():
    if not (EVAL / "mmlu" / "val").is_dir():
        pytest.skip("shared MMLU absent")
    import csv

    want = sum(1 for f in (EVAL / "mmlu" / "val").glob("*.csv") for _ in csv.reader(open(f, newline="")))
    items = registry()["mmlu"].load(EVAL / "mmlu")
    assert len(items) == want == 1542
    ctx = items[0].requests[0][0]
    assert ctx.count("\nAnswer: ") == 5 and ctx.endswith("\nAnswer:") and items[0].requests[0][1] == " A"


# ------------------------------------------------------------ scoring rules, by hand

class Canned(LM):
    """An LM whose log-likelihoods are given per continuation text."""

    def __init__(self, table):
        self.table = table

    def loglikelihood(self, requests):
        return [self.table[c] for _, c in requests]


def test_acc_and_acc_norm_follow_lm_eval():
    # choice "bb" has the best raw log-likelihood (-2.0); per character, "cccccc" wins (-3/6 = -0.5 > -1.0)
    table = {" bb": (-2.0, False), " cccccc": (-3.0, False), " a": (-2.5, True)}
    items = [Item([("q", " bb"), ("q", " cccccc"), ("q", " a")], 0, ["bb", "cccccc", "a"]),
             Item([("q", " bb"), ("q", " cccccc"), ("q", " a")], 1, ["bb", "cccccc", "a"])]
    m = score_task(Canned(table), registry()["arc_easy"], items).metrics
    assert m["acc"] == 0.5 and m["acc_norm"] == 0.5 and m["n"] == 2
    assert m["chance"] == pytest.approx(1 / 3)
    lam = score_task(Canned(table), registry()["lambada_openai"], [Item([("c", " a")], 0, ["a"])]).metrics
    assert lam["acc"] == 1.0 and lam["loglik"] == -2.5 and lam["ppl"] == pytest.approx(math.exp(2.5))
    # centred: 0.5 on 3 choices is (0.5 - 1/3) / (2/3) = 0.25; lambada's 1.0 is 1.0; mean 0.625
    assert core_score({"a": {**m, "core_metric": "acc"}, "b": lam}) == pytest.approx(0.625)
    assert centred(0.25, 0.25) == 0


def test_prompts_match_lm_eval_templates(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"query": "Question: Why?\n", "choices": ["A b", "c"], "gold": 1}) + "\n")
    assert registry()["piqa"].load(f)[0].requests[1] == ("Question: Why?\nAnswer:", " c")
    f.write_text(json.dumps({"query": "Passage: P.\nQuestion: q?", "choices": ["no", "yes"], "gold": 0}) + "\n")
    assert registry()["boolq"].load(f)[0].requests[0] == ("P.\nQuestion: q?\nAnswer:", " no")
    f.write_text(json.dumps({"ctx": "Cut: A man [title] walks.  He", "endings": ["runs [step] far", "b"], "label": 0}))
    it = registry()["hellaswag"].load(f)[0]
    assert it.requests[0] == ("Cut: A man. walks. He", " runs far") and it.choices[0] == "runs far"
    f.write_text(json.dumps({"context_options": ["X so A", "X so B"], "continuation": "won.", "gold": 1}))
    assert registry()["winogrande"].load(f)[0].requests == [("X so A", " won."), ("X so B", " won.")]


@pytest.mark.parametrize("row,field", [({"query": "q", "choices": ["a"], "gold": 0}, "choices"),
                                       ({"query": "q", "choices": ["a", "b"], "gold": 2}, "gold"),
                                       ({"choices": ["a", "b"], "gold": 0}, "query"),
                                       ({"query": "q", "choices": ["a", "b"], "gold": "x"}, "gold"),
                                       ({"query": "q", "choices": ["a", "b"], "gold": "1.5"}, "gold"),
                                       ({"query": "q", "choices": ["a", "b"], "gold": ""}, "gold"),
                                       ({"query": "q", "choices": ["a", "b"], "gold": "2"}, "gold"),
                                       ({"query": "q", "choices": ["a", "b"], "gold": 1.0}, "gold")])
def test_a_bad_row_names_the_file_line_and_field(tmp_path, row, field):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"query": "ok", "choices": ["a", "b"], "gold": 0}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(TaskError) as e:
        registry()["arc_easy"].load(f)
    assert f"{f}:2" in str(e.value) and field in str(e.value)


def test_a_gold_index_as_a_string_of_digits_is_read(tmp_path):
    """HellaSwag on the Hugging Face hub stores its label as a string ("label": "1"); the
    loaders refused it (the field should be int). A string of digits is the index."""
    f = tmp_path / "hs.jsonl"
    f.write_text(json.dumps({"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": "3"}) + "\n")
    assert registry()["hellaswag"].load(f)[0].gold == 3
    f.write_text(json.dumps({"query": "q", "choices": ["a", "b"], "gold": "1"}) + "\n")
    assert registry()["arc_easy"].load(f)[0].gold == 1
    f.write_text(json.dumps({"ctx": "A man", "endings": ["a", "b"], "label": "x"}) + "\n")
    with pytest.raises(TaskError, match=f"{f}:1: field 'label'"):
        registry()["hellaswag"].load(f)


def test_unknown_task_and_missing_file_are_user_errors(tmp_path):
    from fmforge.errors import UserError

    with pytest.raises(UserError, match="unknown task 'nope'"):
        resolve("nope")
    with pytest.raises(UserError, match="missing.jsonl"):
        resolve(f"arc_easy={tmp_path / 'missing.jsonl'}")


# ------------------------------------------------------------ a tiny fmforge model on disk

TEXT = ("The quick brown fox jumps over the lazy dog. " * 3 + "A man walks into a bar and orders water. "
        "She reads a book under the old tree. They play ball in the green park every day. ") * 20


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """runs/t: a random-init fmforge model and a 300-token BPE, as `fmforge run` lays them out."""
    from fmforge.model.transformer import Transformer
    from fmforge.model.weights import save_model
    from fmforge.tokenizer.bpe import train_bpe

    d = tmp_path_factory.mktemp("runs") / "t"
    tok = train_bpe([TEXT], TokenizerConfig(vocab_size=300, min_frequency=1), d / "tokenizer")
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), d_model=32, n_layers=2, n_heads=2, context_length=48,
                      init_std=0.3)
    torch.manual_seed(0)
    (d / "train").mkdir(parents=True)
    save_model(Transformer(cfg).state_dict(), cfg, d / "train")
    return d


def _direct_loglik(model, ids: list[int], n_cont: int) -> float:
    """Sum of log p of the last n_cont ids, one unbatched forward pass."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).float()[0], -1)
    return float(sum(logp[i - 1, ids[i]] for i in range(len(ids) - n_cont, len(ids))))


def test_batched_logliks_equal_one_sequence_at_a_time_and_truncate_from_the_left(run_dir):
    from fmforge.eval.load import load_for_eval

    lm = load_for_eval(run_dir).lm
    reqs = [("The quick brown", " fox"), ("A man walks into a bar and", " orders water."), ("She reads ", "a book"),
            (TEXT[:400], " the lazy dog.")]  # the last is longer than the 48-token context
    small = LM(lm.model, lm.tokenizer, lm.prefix, lm.add_special_tokens, batch_tokens=1).loglikelihood(reqs)
    big = LM(lm.model, lm.tokenizer, lm.prefix, lm.add_special_tokens, batch_tokens=10_000).loglikelihood(reqs)
    for (a, ga), (b, gb) in zip(small, big):
        assert a == pytest.approx(b, abs=1e-5) and ga == gb
    for (ctx, cont), (ll, _) in zip(reqs, big):
        c, x = lm.encode_pair(ctx, cont)
        ids = (c + x)[-(lm.max_length + 1):]
        assert ll == pytest.approx(_direct_loglik(lm.model, ids, len(x)), abs=1e-4)
    # lm-eval moves the context's trailing space to the continuation
    assert lm.encode_pair("She reads ", "a book") == lm.encode_pair("She reads", " a book")


def _tasks(tmp: Path) -> list[str]:
    arc = tmp / "arc.jsonl"
    arc.write_text("".join(json.dumps({"query": f"Question: What does the {w} do?", "choices": ["jumps", "reads a book",
                                                                                               "walks"], "gold": i % 3})
                           + "\n" for i, w in enumerate(["fox", "man", "dog", "tree"])))
    wino = tmp / "wino.jsonl"
    wino.write_text(json.dumps({"context_options": ["The fox", "The dog"], "continuation": "is lazy.", "gold": 1}) + "\n")
    lam = tmp / "lam.jsonl"
    lam.write_text(json.dumps({"context": "The quick brown fox jumps over the lazy", "continuation": "dog"}) + "\n")
    return [f"arc_easy={arc}", f"winogrande={wino}", f"lambada_openai={lam}"]


def test_cli_eval_writes_eval_json_items_and_lm_on_a_run_a_checkpoint_and_an_hf_folder(run_dir, tmp_path):
    from fmforge.cli import app
    from fmforge.eval.load import load_for_eval
    from fmforge.export.writer import export_hf

    text = tmp_path / "held.txt"
    text.write_text("The lazy dog reads a book.")
    tasks = _tasks(tmp_path)
    args = [a for t in tasks for a in ("--task", t)]
    r = CliRunner().invoke(app, ["eval", "--model", str(run_dir), *args, "--out", str(tmp_path / "e1"), "--per-item",
                                 "--text", str(text)])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e1" / "eval.json").read_text())
    assert set(res["tasks"]) == {"arc_easy", "winogrande", "lambada_openai"}
    for m in res["tasks"].values():
        assert {"acc", "acc_norm", "n"} <= set(m) and 0 <= m["acc"] <= 1
    assert res["tasks"]["arc_easy"]["n"] == 4
    items = [json.loads(x) for x in (tmp_path / "e1" / "items" / "arc_easy.jsonl").read_text().splitlines()]
    assert len(items) == 4 and all(len(i["loglik"]) == 3 for i in items)
    # the per-item log-likelihoods are the model's, computed here directly
    lm = load_for_eval(run_dir).lm
    c, x = lm.encode_pair("Question: What does the fox do?\nAnswer:", " reads a book")
    assert items[0]["loglik"][1] == pytest.approx(_direct_loglik(lm.model, c + x, len(x)), abs=1e-4)
    # held-out bits per byte of the text file: its nats (one forward pass here) / ln 2 / bytes
    ids = lm.encode(text.read_text())
    nats = -_direct_loglik(lm.model, ids, len(ids) - 1)
    assert res["lm"]["bytes"] == len(text.read_bytes())
    assert res["lm"]["bpb"] == pytest.approx(nats / math.log(2) / len(text.read_bytes()), rel=1e-4)
    assert res["core"] is not None and (tmp_path / "e1" / "eval.md").is_file()

    # a checkpoint of the same weights and the same model exported to HF give the same scores
    state = {"model": lm.model.state_dict(), "model_config": lm.model.cfg.model_dump(mode="json"),
             "tokens_dir": str(run_dir / "tokenizer" / "shards")}
    ck = run_dir / "train" / "checkpoints" / "step-00000001"
    ck.mkdir(parents=True)
    torch.save(state, ck / "state.pt")
    r = CliRunner().invoke(app, ["eval", "--model", str(ck), *args, "--out", str(tmp_path / "e2")])
    assert r.exit_code == 0, r.output
    res2 = json.loads((tmp_path / "e2" / "eval.json").read_text())
    assert res2["tasks"] == {k: {**v, "seconds": res2["tasks"][k]["seconds"]} for k, v in res["tasks"].items()}
    (tmp_path / "hf").mkdir()
    export_hf(run_dir, tmp_path / "hf")
    r = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "hf"), *args, "--out", str(tmp_path / "e3")])
    assert r.exit_code == 0, r.output
    res3 = json.loads((tmp_path / "e3" / "eval.json").read_text())
    assert res3["model_kind"] == "hf" and res3["lm"] is None
    for k in res["tasks"]:
        assert res3["tasks"][k]["n"] == res["tasks"][k]["n"]


def test_cli_eval_bad_task_is_one_line_exit_2(run_dir, tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "fmforge", "eval", "--model", str(run_dir), "--task", "nope",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert p.returncode == 2 and "unknown task 'nope'" in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()


def test_cli_eval_humaneval_generates_executes_and_reports_pass_at_k(run_dir, tmp_path):
    from fmforge.cli import app

    f = tmp_path / "he.jsonl"
    rows = [{"task_id": f"t/{i}", "prompt": f"def f{i}(x):\n", "entry_point": f"f{i}", "canonical_solution": "",
             "test": f"def check(g):\n    assert g({i}) == {i}\n"} for i in range(2)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(app, ["eval", "--model", str(run_dir), "--task", f"humaneval={f}", "--out",
                                 str(tmp_path / "o"), "--per-item", "--set", "eval.code_max_new_tokens=6"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "eval.json").read_text())["tasks"]["humaneval"]
    assert m["n"] == 2 and m["pass@1"] == m["acc"] and 0 <= m["pass@1"] <= 1
    items = [json.loads(x) for x in (tmp_path / "o" / "items" / "humaneval.jsonl").read_text().splitlines()]
    assert [len(i["completions"]) for i in items] == [1, 1] and all(len(i["passed"]) == 1 for i in items)


def test_cli_eval_reads_a_model_folder_with_its_tokenizer_beside_it(run_dir, tmp_path):
    """What `fmforge import-hf` writes (model.safetensors + model.json + tokenizer.json in one
    folder, which serve and export read) was refused by eval: it looked only in ../tokenizer.
    It scores as the run it came from; the folder belongs to no run, so no validation shards."""
    from fmforge.cli import app
    from fmforge.export.writer import export_hf

    (tmp_path / "hf").mkdir()
    export_hf(run_dir, tmp_path / "hf")
    r = CliRunner().invoke(app, ["import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "imported")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "imported" / "tokenizer.json").is_file()
    args = [a for t in _tasks(tmp_path) for a in ("--task", t)]
    results = []
    for model, out in ((run_dir, "e-run"), (tmp_path / "imported", "e-imported")):
        r = CliRunner().invoke(app, ["eval", "--model", str(model), *args, "--out", str(tmp_path / out), "--per-item"])
        assert r.exit_code == 0, r.output
        results.append(json.loads((tmp_path / out / "eval.json").read_text()))
        results[-1]["items"] = (tmp_path / out / "items" / "arc_easy.jsonl").read_text()
    ran, imported = results
    assert imported["lm"] is None
    assert imported["items"] == ran["items"]
    for k in ran["tasks"]:
        assert (imported["tasks"][k]["acc"], imported["tasks"][k]["n"]) == (ran["tasks"][k]["acc"], ran["tasks"][k]["n"])
