"""benchmarks/tokenizer.py: its id check catches a wrong id, and a tiny run writes every
system's repeats, the ratios' spread and the identity checks (held-out and WikiText-2 text)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def bench():
    spec = importlib.util.spec_from_file_location("bench_tokenizer", ROOT / "benchmarks" / "tokenizer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_id_check_catches_a_changed_or_missing_id(tmp_path, prepared):
    from tokenizers import Tokenizer

    from fmforge.config import TokenizerConfig
    from fmforge.data.documents import read_docs
    from fmforge.tokenizer.bpe import train_bpe
    from fmforge.tokenizer.encode import encode_corpus

    b = bench()
    rows = list(read_docs(prepared, columns=["id", "text"]))
    texts, ids = [d["text"] for d in rows], [d["id"] for d in rows]
    train_bpe(texts, TokenizerConfig(vocab_size=300), tmp_path / "tok")
    encode_corpus(tmp_path / "tok", prepared, tmp_path / "shards", b.VAL_FRACTION, b.SPLIT_SEED, workers=1)
    tok = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    ref = [np.asarray(tok.encode(t, add_special_tokens=False).ids, dtype=np.uint32) for t in texts]

    assert b.mismatches(tmp_path / "shards", ids, ref) == []
    wrong = [r.copy() for r in ref]
    k = max(range(len(wrong)), key=lambda i: len(wrong[i]))  # a document with ids (not an empty one)
    wrong[k][len(wrong[k]) // 2] ^= 1
    assert b.mismatches(tmp_path / "shards", ids, wrong) == [k]
    # a reference one document short: that document is left over in the shards
    assert b.mismatches(tmp_path / "shards", ids[:-1], ref[:-1]) == [-1]


@pytest.mark.skipif(not (SHARED / "pretrain" / "peps.tar.gz").exists() or
                    not (SHARED / "eval" / "wikitext-2" / "valid.txt").exists(), reason="../shared/data is absent")
def test_tiny_run_writes_repeats_ratios_and_checks(tmp_path):  # ~8 s on 2 quiet cores
    out = tmp_path / "tok.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tokenizer.py"), "--max-mb", "1", "--vocab", "1024",
                        "--repeats", "2", "--workers", "1,2", "--sources", "peps.tar.gz,tinyshakespeare.txt",
                        "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["benchmark"] == "tokenizer" and r["args"]["repeats"] == 2 and "--workers" in r["argv"]
    assert {"commit", "dirty", "date"} <= set(r) and "load_avg_1m_before" in r["hardware"]
    f = r["figures"]
    mb = f["corpus"]["mb"]
    assert 0.9 < mb < 1.5 and f["corpus"]["heldout_docs"] > 0
    systems = ["hf_encode_batch", "hf_encode_batch_fast", "tiktoken_in_memory_1_thread",
               "tiktoken_encode_ordinary_batch_2_threads", "fmforge_encode_1_workers", "fmforge_encode_2_workers"]
    rate = {}
    for name in systems:
        runs = f[name]["runs"]
        assert len(runs) == 2
        rate[name] = [mb / x["seconds"] for x in runs]
        s = f[name]["mb_per_s"]
        assert s["mean"] == pytest.approx(sum(rate[name]) / 2) and s["min"] <= s["mean"] <= s["max"]
    for w in (1, 2):
        for peer in systems[:4]:
            ratio = f["ratios"][f"fmforge_{w}_workers_vs_{peer}"]
            want = [a / b for a, b in zip(rate[f"fmforge_encode_{w}_workers"], rate[peer])]
            assert ratio["runs"] == pytest.approx(want) and ratio["mean"] == pytest.approx(sum(want) / 2)
            assert ratio["min"] == pytest.approx(min(want)) and ratio["max"] == pytest.approx(max(want))
    assert f["ratios"]["scaling_2_vs_1_workers"]["mean"] > 0
    cpu = [mb / x["cpu_seconds"] / (mb / y["cpu_seconds"]) for x, y in
           zip(f["fmforge_encode_2_workers"]["runs"], f["hf_encode_batch_fast"]["runs"])]
    assert f["ratios_per_cpu_second"]["fmforge_2_workers_vs_hf_encode_batch_fast"]["runs"] == pytest.approx(cpu)
    ids = f["identical_ids"]
    assert ids["heldout"]["docs"] > 0 and ids["trained_on"]["docs"] > 0 and ids["wikitext2"]["docs"] > 100
    for key in ("1_workers", "2_workers", "heldout", "trained_on", "wikitext2"):
        assert ids[key]["mismatched_docs"] == 0, key
    assert ids["runs_byte_identical_to_first"] and ids["workers_byte_identical"]
    assert f["speedup_end_to_end_vs_hf"] == pytest.approx(f["ratios"]["fmforge_2_workers_vs_hf_encode_batch"]["mean"])
