"""Prepare end to end: every document kept or removed with a reason, near-duplicates
found across shards and workers, decontamination, a killed run resumed to the same result
as a clean one, and the Ray executor on a local Ray instance."""
from __future__ import annotations

import gzip
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fmforge.config import DataConfig
from fmforge.data.collect import collect
from fmforge.data.documents import make_doc, read_docs, write_shard
from fmforge.data.minhash import jaccard, near_duplicates, permutations, signature
from fmforge.data.prepare import prepare
from fmforge.data.text import ngram_hashes, word_hashes, words
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ("river mountain village harbour market winter summer lantern garden teacher student letter journey "
         "forest bridge candle window morning evening kitchen orchard meadow painter sailor doctor library "
         "carriage station theatre museum island valley castle soldier farmer merchant bakery chapel").split()
STOP = "the of and to with that have be".split()


def essay(rng: random.Random, n_words: int = 220) -> str:
    """Readable-enough English prose with stop words and sentences, unique per seed."""
    sents, words_left = [], n_words
    while words_left > 0:
        k = rng.randint(8, 16)
        w = [rng.choice(VOCAB) if i % 2 else rng.choice(STOP) for i in range(k)] + [f"w{rng.randint(0, 10**9)}"]
        sents.append(" ".join(w).capitalize() + ".")
        words_left -= k
    return "\n".join(" ".join(sents[i:i + 3]) for i in range(0, len(sents), 3))


def mutate(text: str, rng: random.Random, frac: float) -> str:
    toks = text.split(" ")
    for i in rng.sample(range(len(toks)), max(1, int(len(toks) * frac))):
        toks[i] = f"changed{i}"
    return " ".join(toks)


def test_minhash_estimates_known_jaccard_pairs():
    rng = random.Random(0)
    perms = permutations(128, 1)
    base = essay(rng, 600)
    for frac, lo, hi in ((0.01, 0.85, 1.0), (0.05, 0.55, 0.85), (0.3, 0.0, 0.3)):
        other = mutate(base, rng, frac)
        a, b = word_hashes(words(base)), word_hashes(words(other))
        true = jaccard(ngram_hashes(a, 5), ngram_hashes(b, 5))
        est = float((signature(a, 5, perms) == signature(b, 5, perms)).mean())
        assert lo <= true <= hi and abs(est - true) < 0.12, (frac, true, est)


def test_lsh_clusters_with_union_find():
    rng = random.Random(1)
    perms = permutations(128, 1)
    texts = [essay(rng, 400) for _ in range(30)]
    texts += [mutate(texts[3], rng, 0.01), mutate(texts[3], rng, 0.01), mutate(texts[7], rng, 0.005),
              mutate(texts[9], rng, 0.4)]  # 30, 31 -> 3; 32 -> 7; 33 is too different from 9
    sigs = np.stack([signature(word_hashes(words(t)), 5, perms) for t in texts])
    assert near_duplicates(sigs, 16, 8, 0.75) == {30: 3, 31: 3, 32: 7}


def docs_table(tmp_path: Path, docs: list[dict], shards: int = 2) -> Path:
    raw = tmp_path / "raw"
    per = -(-len(docs) // shards)
    for i in range(shards):
        write_shard(docs[i * per:(i + 1) * per], raw / f"docs-{i:05d}.parquet")
    return raw


def crafted(tmp_path: Path) -> tuple[Path, dict]:
    rng = random.Random(2)
    prose = [essay(rng) for _ in range(40)]
    docs = [make_doc(t, "prose", f"p{i}") for i, t in enumerate(prose)]
    docs.append(make_doc(prose[5], "prose", "exact-copy"))  # lands in the second shard
    docs.append(make_doc(mutate(prose[6], rng, 0.01), "prose", "near-copy"))
    docs.append(make_doc("Ceci est un texte écrit en français pour vérifier que la détection de la langue "
                         "fonctionne et que le document est retiré avec sa raison. " * 3, "prose", "french"))
    docs.append(make_doc("tiny", "prose", "short"))
    docs.append(make_doc("", "prose", "empty"))
    docs.append(make_doc(essay(rng) + "\nContact me at alice@example.com or 192.168.0.1.", "prose", "pii"))
    code = "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n\n\nprint(add(1, 2))\n"
    docs.append(make_doc(code, "code", "add.py", language="python"))
    docs.append(make_doc("x = '" + "a" * 3000 + "'\n", "code", "long.py", language="python"))
    leak = "the quick brown fox was asked which planet is closest to the sun and it answered mercury of course"
    docs.append(make_doc(essay(rng) + "\n" + leak + ".", "prose", "leaked"))
    rng.shuffle(docs)
    evals = tmp_path / "eval" / "task.jsonl.gz"
    evals.parent.mkdir()
    with gzip.open(evals, "wt") as f:
        f.write(json.dumps({"query": "Question: " + leak, "choices": ["a", "b"], "gold": 0}) + "\n")
    return docs_table(tmp_path, docs), {"eval": str(evals)}


def cfg(**kw) -> DataConfig:
    return DataConfig(**kw)


def kept(out: Path) -> list[tuple[str, str]]:
    return [(d["id"], d["text"]) for d in read_docs(out)]


def test_prepare_accounts_for_every_document(tmp_path):
    raw, extra = crafted(tmp_path)
    s = prepare(raw, tmp_path / "out", cfg(decontaminate=[extra["eval"]], workers=2))
    assert s.docs_in == 49 and s.docs_out + sum(s.removed.values()) == s.docs_in
    assert s.docs_out == len(kept(tmp_path / "out"))
    for reason in ("exact_duplicate", "near_duplicate", "language", "too_short", "empty", "code_long_line", "contaminated"):
        assert s.removed[reason] == 1, (reason, dict(s.removed))
    assert s.pii == {"email": 1, "ip": 1} and s.kinds == {"prose": 47, "code": 2}
    texts = dict(kept(tmp_path / "out"))
    assert any("<EMAIL>" in t and "<IP_ADDRESS>" in t for t in texts.values())
    assert any(t.startswith("def add") for t in texts.values())  # code is not judged by prose rules
    near = s.examples["near_duplicate"][0]
    assert near["where"] == "prose:near-copy" and near["detail"] == "duplicate of prose:p6"
    card = (tmp_path / "out" / "datacard.md").read_text()
    for heading in ("## Stages", "## Removal reasons", "### Examples", "## PII redaction", "## Decontamination",
                    "## Languages (kept documents)", "## Document lengths"):
        assert heading in card
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["stages"]["near_dedup"]["docs_in"] - stats["stages"]["near_dedup"]["docs_out"] == 1
    assert not (tmp_path / "out" / ".work").exists()


def test_report_mode_and_workers_do_not_change_the_result(tmp_path):
    raw, extra = crafted(tmp_path)
    one = prepare(raw, tmp_path / "one", cfg(decontaminate=[extra["eval"]], decontam_action="report", workers=1))
    two = prepare(raw, tmp_path / "two", cfg(decontaminate=[extra["eval"]], decontam_action="report", workers=2))
    assert one.contaminated_docs == 1 and "contaminated" not in one.removed
    assert kept(tmp_path / "one") == kept(tmp_path / "two")
    assert one.removed == two.removed and one.examples == two.examples


def big_input(tmp_path: Path, n: int = 1500) -> Path:
    rng = random.Random(3)
    docs = [make_doc(essay(rng, 300), "prose", f"d{i}") for i in range(n)]
    docs += [make_doc(mutate(docs[i]["text"], rng, 0.01), "prose", f"copy{i}") for i in range(0, n, 10)]
    return docs_table(tmp_path, docs, shards=3)


def test_killed_prepare_resumes_to_the_clean_result(tmp_path):
    raw = big_input(tmp_path)
    settings = {"languages": [], "workers": 1}
    clean = prepare(raw, tmp_path / "clean", cfg(**settings))
    out = tmp_path / "killed"
    code = (f"from fmforge.config import DataConfig; from fmforge.data.prepare import prepare; "
            f"prepare({str(raw)!r}, {str(out)!r}, DataConfig(**{settings!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / ".work").glob("task-*.parquet"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "stats.json").exists(), "the run finished before it could be killed"
    done = len(list((out / ".work").glob("task-*.parquet")))
    resumed = prepare(raw, out, cfg(**settings))
    assert 0 < done and kept(out) == kept(tmp_path / "clean")
    assert resumed.removed == clean.removed and resumed.removed["near_duplicate"] == 150
    assert not list(out.glob(".*tmp*")) and not (out / ".work").exists()


def test_resume_with_another_worker_count_gives_the_clean_result(tmp_path, monkeypatch):
    """Tasks are planned from the input alone: a run interrupted at 1 worker and resumed at
    4 (the worker count is not part of the result) must not mix two task plans. Before the
    plan was worker-independent, the resumed run reused task files of the other plan and
    lost or doubled documents."""
    import fmforge.data.prepare as prep_mod
    from fmforge.data import executors

    raw = big_input(tmp_path, n=900)
    settings = {"languages": [], "near_dedup": {"enabled": False}, "dedup_exact": False}
    clean = prepare(raw, tmp_path / "clean", cfg(workers=1, **settings))
    real = executors.run_tasks

    def run_half(tasks, c, work, workers, **kw):  # the first run stops after half its tasks
        real(tasks[: len(tasks) // 2], c, work, workers, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(prep_mod, "run_tasks", run_half)
    with pytest.raises(KeyboardInterrupt):
        prepare(raw, tmp_path / "out", cfg(workers=1, **settings))
    monkeypatch.setattr(prep_mod, "run_tasks", real)
    resumed = prepare(raw, tmp_path / "out", cfg(workers=4, **settings))
    assert kept(tmp_path / "out") == kept(tmp_path / "clean")
    assert resumed.docs_in == clean.docs_in == 990 and resumed.docs_out == clean.docs_out


def test_tasks_are_sized_by_bytes_not_rows(tmp_path):
    """A shard of a few book-sized documents among many small ones is cut by text bytes, so
    no task holds most of the corpus (a straggler that no worker count speeds up)."""
    from fmforge.data.tasks import TASK_BYTES, plan_tasks

    rng = random.Random(5)
    book = essay(rng, 60_000)  # ~400 KB
    docs = [make_doc(book + str(i), "prose", f"book{i}") for i in range(12)]
    docs += [make_doc(essay(rng, 200), "prose", f"page{i}") for i in range(600)]
    raw = docs_table(tmp_path, docs, shards=1)
    tasks = plan_tasks(raw)
    sizes = []
    for path, a, b, planned in tasks:
        sizes.append(sum(len(d["text"].encode()) for d in docs[a:b]))
    assert sum(t[2] - t[1] for t in tasks) == len(docs)
    assert [t[1] for t in tasks] == sorted(t[1] for t in tasks) and tasks[0][1] == 0
    assert max(sizes) <= TASK_BYTES + len(book.encode()) + 10, sizes
    assert len(tasks) >= sum(sizes) // TASK_BYTES


def test_near_dedup_recall_across_shards_and_workers(tmp_path):
    raw = big_input(tmp_path, n=600)
    s = prepare(raw, tmp_path / "out", cfg(languages=[], workers=2))
    ids = {d["id"] for d in read_docs(tmp_path / "out")}
    assert s.removed["near_duplicate"] == 60 and len(ids) == 600


def test_ray_executor_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("datatrove")
    raw, extra = crafted(tmp_path)
    local = prepare(raw, tmp_path / "local", cfg(workers=2))
    ray_run = prepare(raw, tmp_path / "ray", cfg(workers=2, executor="ray"))
    assert kept(tmp_path / "ray") == kept(tmp_path / "local") and ray_run.removed == local.removed


def test_stdlib_code_keeps_its_bulk(tmp_path, corpus_dir):
    collect([str(corpus_dir)], ["*.py"], tmp_path / "raw")
    s = prepare(tmp_path / "raw", tmp_path / "out", cfg(workers=1))
    assert s.docs_out >= 0.85 * s.docs_in and s.bytes_out >= 0.9 * s.bytes_in, dict(s.removed)
    assert not any(r.startswith(("gopher", "c4", "language")) for r in s.removed)


def test_decontamination_against_real_eval_sets(tmp_path):
    hellaswag = SHARED / "eval" / "tasks" / "hellaswag.jsonl.gz"
    if not hellaswag.exists():
        pytest.skip(f"shared data absent: {hellaswag}")
    with gzip.open(hellaswag, "rt") as f:
        item = json.loads(next(f))
    rng = random.Random(4)
    docs = [make_doc(essay(rng), "p", f"d{i}") for i in range(6)]
    docs[2]["text"] += "\n" + item["ctx"] + " " + item["endings"][item["label"]]
    raw = docs_table(tmp_path, docs, shards=1)
    s = prepare(raw, tmp_path / "out", cfg(languages=[], workers=1), decontaminate=[str(SHARED / "eval" / "tasks"), str(SHARED / "eval" / "humaneval")])
    assert s.removed == {"contaminated": 1} and s.examples["contaminated"][0]["where"] == "p:d2"


def test_decontamination_matches_words_not_runs_of_punctuation(tmp_path):
    """A 13-gram of punctuation is no leak: an rst heading's '############' underline once
    matched a '# # # ...' scene break of LAMBADA and dropped a PEP sharing no 13 words with it
    ("205 shared 13-grams"); a copied passage is still found."""
    rng = random.Random(7)
    leak = essay(random.Random(99), 40)
    (tmp_path / "eval.jsonl").write_text(
        json.dumps({"context": "Chapter one.\n\n# # # # # # # # # # # # # # # #\n\n" + leak}) + "\n")
    heading = essay(rng) + "\n\nNotes\n" + "#" * 40 + "\n\n" + essay(rng)
    copied = essay(rng) + "\n" + leak.upper() + "\n" + essay(rng)
    docs = [make_doc(essay(rng), "p", "clean"), make_doc(heading, "p", "heading"), make_doc(copied, "p", "leak")]
    raw = docs_table(tmp_path, docs, shards=1)
    s = prepare(raw, tmp_path / "out", cfg(languages=[], workers=1), decontaminate=[str(tmp_path / "eval.jsonl")])
    assert s.removed == {"contaminated": 1}, dict(s.removed)
    assert s.examples["contaminated"][0]["where"] == "p:leak"
    assert sorted(i for i, _ in kept(tmp_path / "out")) == sorted(d["id"] for d in docs[:2])


def test_data_and_tokenizer_commands_start_without_torch():
    """Data preparation needs no torch, and every data/tokenizer command starts a process: the
    CLI with every stage's verbs mounted must not import it (eval's commands once did, ~1 s of
    each command's start-up, the bulk of encode's fixed cost at 16 workers)."""
    import subprocess
    import sys

    code = ("import sys, fmforge.cli, fmforge.data.prepare, fmforge.tokenizer.encode; "
            "sys.exit('torch imported' if 'torch' in sys.modules else 0)")
    subprocess.run([sys.executable, "-c", code], check=True)
