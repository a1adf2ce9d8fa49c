"""Encoding a corpus to shards: exact ids per document, split, worker-count and resume invariance."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fmforge.config import TokenizerConfig
from fmforge.data.documents import read_docs
from fmforge.tokenizer.bpe import EOT, train_bpe
from fmforge.tokenizer.encode import PROGRESS, encode_corpus, is_validation
from fmforge.tokenizer.fast import Encoder
from fmforge.tokenizer.shards import Shard, open_split, shard_files, write_arrays

VAL, SEED, CHUNK = 0.2, 7, 200_000  # small chunks: several shards from a small corpus


@pytest.fixture(scope="module")
def tok_dir(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_bpe((d["text"] for d in read_docs(prepared, columns=["text"])), TokenizerConfig(vocab_size=700), out)
    return out


@pytest.fixture(scope="module")
def fresh(prepared, tok_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fresh")
    encode_corpus(tok_dir, prepared, out, VAL, SEED, workers=1, chunk_bytes=CHUNK)
    return out


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*-*.bin"))}


def test_reader_gives_back_each_documents_ids_in_corpus_order(prepared, tok_dir, fresh):
    enc = Encoder.from_path(tok_dir)
    eot = enc.token_to_id(EOT)
    docs = list(read_docs(prepared, columns=["id", "text"]))
    stats = json.loads((fresh / "stats.json").read_text())
    assert stats["chunks"] > 2 and stats["encoder"] == "tiktoken"
    for split, want_val in (("train", False), ("val", True)):
        want = [d for d in docs if is_validation(d["id"], VAL, SEED) == want_val]
        shards = open_split(fresh, split)
        got = [(s, i) for s in shards for i in range(len(s))]
        assert len(got) == len(want) == stats[f"{split}_docs"]
        assert sum(int(s.n_tokens) for s in shards) == stats[f"{split}_tokens"]
        for (s, i), d in zip(got, want):
            assert s.doc(i).tolist() == [eot] + enc.hf.encode(d["text"], add_special_tokens=False).ids
            assert int(s.doc_bytes[i]) == len(d["text"].encode("utf-8"))
            assert s.tokens.dtype == np.uint16 and s.vocab_size == 700


def test_split_disjoint_and_matches_the_hash(prepared, fresh):
    docs = list(read_docs(prepared, columns=["id"]))
    n_val = sum(is_validation(d["id"], VAL, SEED) for d in docs)
    assert 0 < n_val < len(docs)
    stats = json.loads((fresh / "stats.json").read_text())
    assert (stats["val_docs"], stats["train_docs"]) == (n_val, len(docs) - n_val)


def test_same_bytes_for_any_worker_count_and_rerun(prepared, tok_dir, fresh, tmp_path):
    encode_corpus(tok_dir, prepared, tmp_path / "w2", VAL, SEED, workers=2, chunk_bytes=CHUNK)
    assert digest(tmp_path / "w2") == digest(fresh)
    encode_corpus(tok_dir, prepared, tmp_path / "w2", VAL, SEED, workers=2, chunk_bytes=CHUNK)  # all done already
    assert digest(tmp_path / "w2") == digest(fresh)


def test_hf_fallback_writes_the_same_shards(prepared, tok_dir, fresh, tmp_path):
    s = encode_corpus(tok_dir, prepared, tmp_path, VAL, SEED, workers=1, chunk_bytes=CHUNK, fast=False)
    assert s.encoder == "hf" and digest(tmp_path) == digest(fresh)


def test_resume_after_simulated_kill_equals_fresh(prepared, tok_dir, fresh, tmp_path):
    out = tmp_path / "out"
    encode_corpus(tok_dir, prepared, out, VAL, SEED, workers=1, chunk_bytes=CHUNK)
    # the state a kill leaves: last chunk not logged, its shard half-written, a temp file
    lines = (out / PROGRESS).read_text().splitlines()
    last = json.loads(lines[-1])["chunk"]
    (out / PROGRESS).write_text("\n".join(lines[:-1]) + '\n{"chunk": 9')  # and a torn line
    # the split hangs on document ids, which hang on the corpus path: a chunk may be all val
    shard = next(p for p in (out / f"train-{last:06d}.bin", out / f"val-{last:06d}.bin") if p.exists())
    shard.write_bytes(shard.read_bytes()[:100])
    (out / f".val-{last:06d}.bin.tmp-12345").write_bytes(b"partial")
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*-*.bin") if p.name != shard.name}
    encode_corpus(tok_dir, prepared, out, VAL, SEED, workers=2, chunk_bytes=CHUNK)
    assert digest(out) == digest(fresh)
    assert not list(out.glob(".*tmp*"))
    kept = {n for n, m in mtimes.items() if (out / n).stat().st_mtime_ns == m}
    assert kept == {n for n in mtimes if not n.endswith(f"-{last:06d}.bin")}  # finished shards were not redone


def test_deleted_or_damaged_shard_of_a_logged_chunk_is_redone(prepared, tok_dir, fresh, tmp_path):
    out = tmp_path / "out"
    encode_corpus(tok_dir, prepared, out, VAL, SEED, workers=1, chunk_bytes=CHUNK)
    train = sorted(out.glob("train-*.bin"))
    train[-1].unlink()
    train[0].write_bytes(train[0].read_bytes()[:-8])
    encode_corpus(tok_dir, prepared, out, VAL, SEED, workers=1, chunk_bytes=CHUNK)
    assert digest(out) == digest(fresh)


def test_resume_after_real_kill_equals_fresh(prepared, tok_dir, fresh, tmp_path):
    out = tmp_path / "killed"
    code = (f"from fmforge.tokenizer.encode import encode_corpus; import time, fmforge.tokenizer.encode as e\n"
            f"orig = e.encode_chunk\n"
            f"def slow(i, t):\n    time.sleep(0.3); return orig(i, t)\n"
            f"e.encode_chunk = slow\n"
            f"encode_corpus({str(tok_dir)!r}, {str(prepared)!r}, {str(out)!r}, {VAL}, {SEED}, workers=1, "
            f"chunk_bytes={CHUNK})\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        log = out / PROGRESS
        if log.exists() and len(log.read_text().splitlines()) >= 3:  # plan + 2 chunks done
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert digest(out) != digest(fresh)  # killed part-way
    encode_corpus(tok_dir, prepared, out, VAL, SEED, workers=1, chunk_bytes=CHUNK)
    assert digest(out) == digest(fresh)


def test_changed_plan_is_not_resumed(prepared, tok_dir, tmp_path):
    out = tmp_path / "o"
    encode_corpus(tok_dir, prepared, out, VAL, SEED, workers=1, chunk_bytes=CHUNK)
    encode_corpus(tok_dir, prepared, out, 0.5, SEED, workers=1, chunk_bytes=CHUNK)
    encode_corpus(tok_dir, prepared, tmp_path / "ref", 0.5, SEED, workers=1, chunk_bytes=CHUNK)
    assert digest(out) == digest(tmp_path / "ref")


def test_shard_format_dtype_and_checks(tmp_path):
    for vocab, dtype in ((65536, np.uint16), (65537, np.uint32)):
        path = tmp_path / f"train-{vocab}.bin"
        write_arrays(path, np.array([0, 65535, 5], dtype=np.int64), np.array([0, 2, 3]), [4, 1], vocab)
        s = Shard(path)
        assert s.tokens.dtype == dtype and s.doc(0).tolist() == [0, 65535] and s.doc(1).tolist() == [5]
        assert s.doc_bytes.tolist() == [4, 1] and len(s) == 2 and s.n_tokens == 3
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        Shard(path)
    with pytest.raises(ValueError):
        write_arrays(tmp_path / "x.bin", np.zeros(3), np.array([0, 2]), [1], 10)
    assert shard_files(tmp_path, "train")
