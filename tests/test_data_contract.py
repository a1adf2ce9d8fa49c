"""Issue 9, the data side: folders read by format, clear errors for missing text fields,
a user's own Parquet, degenerate results, --out ownership, no import circles, machine-
independent ids and split, and CLI errors as one line."""
from __future__ import annotations

import ast
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fmforge.config import DataConfig
from fmforge.data.collect import collect
from fmforge.data.documents import read_docs
from fmforge.data.formats import DataError
from fmforge.data.prepare import prepare
from fmforge.errors import DegenerateResult, InputNotFound, UserError
from fmforge.tokenizer.encode import is_validation
from tests.test_data_prepare import essay

ROOT = Path(__file__).resolve().parents[1]


def texts_of(folder: Path) -> list[str]:
    return [d["text"] for d in read_docs(folder)]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ 1. folders by format


def test_folder_of_shards_reads_each_file_by_its_format(tmp_path):
    src = tmp_path / "corpus"
    (src / "sub").mkdir(parents=True)
    (src / "a.jsonl").write_text('{"text": "alpha one"}\n{"text": "alpha two"}\n')
    with gzip.open(src / "sub" / "b.jsonl.gz", "wt") as f:
        f.write('{"text": "beta"}\n')
    pq.write_table(pa.table({"text": ["gamma", "delta"], "n": [1, 2]}), src / "c.parquet")
    (src / "notes.txt").write_text("plain notes\n")
    (src / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    stats = collect([str(src)], DataConfig().include, tmp_path / "out")  # the recipe default include
    assert sorted(texts_of(tmp_path / "out")) == sorted(["alpha one", "alpha two", "beta", "gamma", "delta",
                                                         "plain notes\n"])
    assert stats.docs == 6 and stats.skipped == {"binary": 1}


def test_explicit_include_still_selects(tmp_path):
    src = tmp_path / "c"
    src.mkdir()
    (src / "x.py").write_text("print('x')\n")
    (src / "y.txt").write_text("words\n")
    collect([str(src)], ["*.py"], tmp_path / "out")
    assert texts_of(tmp_path / "out") == ["print('x')\n"]


# ------------------------------------------------------------------ 2. no text field


def test_parquet_without_the_text_column_names_columns_and_flag(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"content": ["a"], "url": ["u"]}), p)
    with pytest.raises(DataError, match=r"t\.parquet.*columns: content, url.*--text-field.*data\.text_field"):
        collect([str(p)], ["*"], tmp_path / "out")
    collect([str(p)], ["*"], tmp_path / "ok", text_field="content")
    assert texts_of(tmp_path / "ok") == ["a"]


def test_jsonl_where_no_record_has_the_field_lists_keys(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"body": "a", "id": 1}\n{"body": "b", "id": 2}\n')
    with pytest.raises(DataError, match=r"t\.jsonl.*body, id.*--text-field"):
        collect([str(p)], ["*"], tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.parquet")) if (tmp_path / "out").exists() else True


# ------------------------------------------------------------------ 3. a user's own Parquet


def user_parquet(path: Path, n: int = 30) -> Path:
    rng = random.Random(3)
    pq.write_table(pa.table({"text": [essay(rng) for _ in range(n)], "lang_hint": ["en"] * n}), path)
    return path


def test_prepare_accepts_a_parquet_with_only_a_text_column(tmp_path):
    src = user_parquet(tmp_path / "mine.parquet")
    s = prepare(src, tmp_path / "out", DataConfig(workers=1))
    assert s.docs_in == 30 and s.docs_out > 0
    ids = [d["id"] for d in read_docs(tmp_path / "out")]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)
    again = prepare(src, tmp_path / "out2", DataConfig(workers=2))
    assert [d["id"] for d in read_docs(tmp_path / "out2")] == ids  # deterministic


def test_prepare_on_a_parquet_without_text_says_which_command(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["x"]}), p)
    with pytest.raises(DataError, match=r"no 'text' column \(columns: body\).*fmforge data collect .*--text-field"):
        prepare(p, tmp_path / "out", DataConfig(workers=1))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 4. degenerate results


def test_collect_of_an_empty_folder_is_degenerate(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DegenerateResult, match="nothing collected.*holds no files"):
        collect([str(tmp_path / "empty")], ["*"], tmp_path / "out")


def test_collect_with_nothing_matching_include_names_the_files_and_field(tmp_path):
    src = tmp_path / "txt"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.txt").write_text("hello\n")
    with pytest.raises(DegenerateResult, match=r"none of the 3 files.*\.txt \(3\).*data\.include"):
        collect([str(src)], ["*.py"], tmp_path / "out")


def test_prepare_keeping_under_the_share_lists_reasons_and_fields(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    (src / "short.jsonl").write_text("".join(json.dumps({"text": f"tiny doc {i}"}) + "\n" for i in range(40)))
    collect([str(src)], ["*"], tmp_path / "col")
    with pytest.raises(DegenerateResult, match=r"keep 0 of 40.*too_short 40 docs → data\.min_chars") as e:
        prepare(tmp_path / "col", tmp_path / "out", DataConfig(workers=1, min_keep_fraction=0))
    assert "min_keep_fraction" not in str(e.value)  # no share setting accepts keeping none
    rng = random.Random(0)
    (src / "good.jsonl").write_text(json.dumps({"text": essay(rng)}) + "\n")  # 1 of 41 kept: 2.4% < 5%
    collect([str(src)], ["*"], tmp_path / "col2")
    with pytest.raises(DegenerateResult, match=r"1 of 41.*data\.min_keep_fraction=0\.05.*too_short"):
        prepare(tmp_path / "col2", tmp_path / "out2", DataConfig(workers=1))
    assert not list((tmp_path / "out2").glob("*.parquet"))
    s = prepare(tmp_path / "col2", tmp_path / "out2", DataConfig(workers=1, min_keep_fraction=0))
    assert s.docs_out == 1


# ------------------------------------------------------------------ 6. outputs


def test_prepare_removes_only_the_files_it_wrote(tmp_path, prepared):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "mine.parquet"
    pq.write_table(pa.table({"x": [1]}), mine)
    cfg = DataConfig(workers=1, min_keep_fraction=0)
    prepare(prepared, out, cfg)
    prepare(prepared, out, cfg)
    assert mine.exists()


def cli(*args):
    from fmforge.cli import app

    return CliRunner().invoke(app, list(map(str, args)))


def test_cli_prepare_refuses_out_equal_to_inside_or_holding_foreign_files(tmp_path, prepared):
    inp = tmp_path / "in"
    shutil.copytree(prepared, inp)
    before = snapshot(inp)
    for out in (inp, inp / "sub"):
        res = cli("data", "prepare", inp, "--out", out)
        assert isinstance(res.exception, UserError) and "input" in str(res.exception)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    res = cli("data", "prepare", inp, "--out", tmp_path / "foreign")
    assert isinstance(res.exception, UserError) and "notes.txt" in str(res.exception)
    assert snapshot(inp) == before and (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


def test_cli_collect_and_prepare_into_their_own_folders_rerun(tmp_path, corpus_dir):
    for _ in range(2):  # a rerun into the folder the same command wrote is allowed
        res = cli("data", "collect", corpus_dir, "--include", "*.py", "--out", tmp_path / "raw")
        assert res.exit_code == 0, res.output
    res = cli("data", "prepare", tmp_path / "raw", "--out", tmp_path / "clean", "--workers", "1")
    assert res.exit_code == 0, res.output
    res = cli("data", "prepare", tmp_path / "clean", "--out", tmp_path / "raw", "--workers", "1")
    assert isinstance(res.exception, UserError) and "data collect" in str(res.exception)


def test_cli_bad_input_leaves_no_output_and_is_one_line(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    for args in (["data", "prepare", bad, "--out", tmp_path / "o1"],
                 ["data", "prepare", tmp_path / "missing", "--out", tmp_path / "o2"],
                 ["data", "collect", tmp_path / "missing", "--out", tmp_path / "o3"]):
        res = cli(*args)
        assert isinstance(res.exception, UserError), res.output
    assert isinstance(cli("data", "prepare", tmp_path / "missing", "--out", tmp_path / "o2").exception, InputNotFound)
    (tmp_path / "empty").mkdir()
    res = cli("data", "collect", tmp_path / "empty", "--out", tmp_path / "o4")
    assert isinstance(res.exception, DegenerateResult)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))
    assert bad.read_bytes() == b"PAR1 this is not parquet"
    p = subprocess.run([sys.executable, "-m", "fmforge.cli", "data", "prepare", str(bad), "--out", str(tmp_path / "o5")],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "1000"})
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


# ------------------------------------------------------------------ 7. no import circles


def test_data_package_has_no_import_circles():
    pkg = ROOT / "fmforge" / "data"
    graph = {}
    for f in pkg.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):  # imports inside functions count too
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fmforge.data."):
                deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("fmforge.data.")}
        graph[f.stem] = deps

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    circles = sorted(m for m in graph if m in reach(m))
    assert not circles, f"modules on an import circle: {circles}"


# ------------------------------------------------------------------ 8. ids and split across machines


def test_ids_and_split_do_not_depend_on_the_absolute_folder(tmp_path, corpus_dir):
    a, b = tmp_path / "machine-a" / "home" / "corpus", tmp_path / "b" / "data"
    shutil.copytree(corpus_dir, a)
    shutil.copytree(corpus_dir, b)
    (a / "extra.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    shutil.copy(a / "extra.jsonl", b / "extra.jsonl")
    ids = []
    for src, out in ((a, tmp_path / "oa"), (b, tmp_path / "ob")):
        collect([str(src)], ["*"], out)
        ids.append([d["id"] for d in read_docs(out)])
    assert ids[0] == ids[1] and len(set(ids[0])) == len(ids[0])
    assert [is_validation(i, 0.2) for i in ids[0]] == [is_validation(i, 0.2) for i in ids[1]]
    assert any(is_validation(i, 0.2) for i in ids[0]) and not all(is_validation(i, 0.2) for i in ids[0])


def test_the_id_changes_with_content_and_with_relative_path(tmp_path):
    from fmforge.data.documents import doc_id

    assert doc_id("a/x.py", "t") == doc_id("a/x.py", "t")
    assert len({doc_id("a/x.py", "t"), doc_id("a/x.py", "u"), doc_id("b/x.py", "t")}) == 3


# ------------------------------------------------------------------ 10. shared CLI options


def test_cli_modules_use_the_shared_options():
    import fmforge.data.commands as dc
    import fmforge.options as opts
    import fmforge.tokenizer.commands as tc

    for mod in (dc, tc):
        src = Path(mod.__file__).read_text()
        assert "typer.Option(None, \"--recipe\"" not in src and "load_recipe" not in src
        assert mod.RecipeOpt is opts.RecipeOpt and mod.SetOpt is opts.SetOpt


# ------------------------------------------------------------------ 5. every byte accounted for


def test_data_card_accounts_for_line_removals_pii_and_measured_values(tmp_path):
    from fmforge.data.documents import make_doc, write_shard

    rng = random.Random(11)
    body = essay(rng).split("\n")
    # one-word lines: C4 drops them (the fineweb preset; the default keeps a speaker line before prose)
    play = "\n".join(f"SPEAKER{i}.\n{line}" for i, line in enumerate(body))
    speaker_lines, speaker_bytes = len(body), sum(len(f"SPEAKER{i}.\n") for i in range(len(body)))
    numbers = " ".join(f"the and {rng.randint(1000, 9999)} {rng.randint(1000, 9999)} {rng.randint(1000, 9999)} harbour."
                       for _ in range(30))  # half the words are numbers: too few alphabetic words
    docs = [make_doc(play, "p", "play.txt"),
            make_doc(essay(rng) + "\nWrite to alice@example.com today.", "p", "pii.txt"),
            make_doc(numbers, "p", "numbers.txt")] + [make_doc(essay(rng), "p", f"e{i}.txt") for i in range(3)]
    write_shard(docs, tmp_path / "in" / "docs-00000.parquet")
    s = prepare(tmp_path / "in", tmp_path / "out", DataConfig(workers=1, languages=[], filters="fineweb"))
    card = (tmp_path / "out" / "datacard.md").read_text()
    assert "Nothing was removed" not in card
    few = s.lines_removed["c4_line_few_words"]
    assert few["lines"] == speaker_lines and few["bytes"] == speaker_bytes and few["docs"] == 1
    assert "| c4_line_few_words | " in card and "data.c4.min_words_per_line" in card
    # every byte between input and output is in the account
    dropped = sum(st["bytes_dropped"] for st in s.stages.values())
    changed = sum(st["bytes_in"] - st["bytes_out"] - st["bytes_dropped"] for st in s.stages.values())
    assert dropped + changed == s.bytes_in - s.bytes_out
    assert s.stages["c4"]["bytes_in"] - s.stages["c4"]["bytes_out"] == sum(r["bytes"] for r in s.lines_removed.values())
    assert s.pii_bytes_in == len("alice@example.com") and s.pii_bytes_out == len("<EMAIL>")
    assert "17 bytes of matches replaced by 7 bytes" in card
    detail = s.examples["gopher_few_alphabetic_words"][0]["detail"]
    from fmforge.data.text import fix_text, words

    toks = words(fix_text(numbers, "NFC", True))  # the measured value, computed here from the same words
    toks_alpha = sum(1 for t in toks if any(c.isalpha() for c in t)) / len(toks)
    assert detail == f"alphabetic words {toks_alpha:.2f} < 0.8 (data.gopher.min_alpha_words)"
    assert detail in card


def test_prepare_on_raw_files_hints_a_collect_command_that_works(tmp_path):
    """prepare given the folder of raw text: the hint was `fmforge data collect SOURCE --out
    <that folder>`, which collect refuses (it holds files fmforge did not write)."""
    import re
    import shlex

    raw = tmp_path / "notes"
    raw.mkdir()
    rng = random.Random(1)
    for i in range(3):
        (raw / f"{i}.txt").write_text(essay(rng))
    res = cli("data", "prepare", raw, "--out", tmp_path / "clean")
    assert isinstance(res.exception, DataError)
    hint = re.search(r"`fmforge (data collect [^`]*)`", str(res.exception)).group(1)
    res = cli(*shlex.split(hint))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in raw.iterdir()) == ["0.txt", "1.txt", "2.txt"]
