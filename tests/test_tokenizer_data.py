"""Round trip and fast-vs-HF identity on the shared real data (books, Wikipedia, PEPs, Shakespeare).

Skipped when ../shared/data is absent (a user's clone).
"""
from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from fmforge.config import TokenizerConfig
from fmforge.data.collect import CollectStats
from fmforge.data.readers import iter_file
from fmforge.tokenizer.bpe import train_bpe
from fmforge.tokenizer.fast import Encoder, hf_encode

PRETRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pretrain"
pytestmark = pytest.mark.skipif(not (PRETRAIN / "books.jsonl.zst").exists(),
                                reason=f"shared data not found at {PRETRAIN}")
ODD = re.compile("[\u2060\u200b-\u200f\u3000-\u30ff\u4e00-\u9fff\uac00-\ud7af\U0001f000-\U0001faff\ufe0f]")


def pretrain_docs():
    """(name, text) of every document of the shared pretrain data."""
    for name in ("books.jsonl.zst", "enwiki.jsonl.zst"):
        for i, d in enumerate(iter_file(PRETRAIN / name, CollectStats())):
            yield f"{name}:{i}", d["text"]
    yield "tinyshakespeare.txt", (PRETRAIN / "tinyshakespeare.txt").read_text(encoding="utf-8")
    with tarfile.open(PRETRAIN / "peps.tar.gz") as tar:
        for m in tar:
            if m.isfile():
                yield m.name, io.TextIOWrapper(tar.extractfile(m), encoding="utf-8").read()


@pytest.fixture(scope="module")
def enc(tmp_path_factory) -> Encoder:
    """A 2k BPE trained on a ~4 MB slice of every source (odd characters included)."""
    out = tmp_path_factory.mktemp("tok")
    sample = [t[:150_000] for i, (_, t) in enumerate(pretrain_docs()) if i % 40 == 0]
    train_bpe(iter(sample), TokenizerConfig(vocab_size=2048), out)
    e = Encoder.from_path(out)
    assert e.kind == "tiktoken", e.why_not
    return e


def odd_windows(limit: int = 3000) -> list[str]:
    """Text around U+2060 word joiners, zero-width characters, CJK and emoji, plus plain openings."""
    out = []
    for i, (_, text) in enumerate(pretrain_docs()):
        if i % 25 == 0:
            out.append(text[:5000])
        for m in list(ODD.finditer(text))[:40]:
            out.append(text[max(0, m.start() - 150) : m.end() + 150])
        if len(out) >= limit:
            break
    return out


def test_round_trip_exact_on_all_pretrain_data(enc):
    n, failed = 0, []
    for name, text in pretrain_docs():
        n += 1
        if enc.tiktoken.decode_bytes(enc.encode(text)) != text.encode("utf-8"):
            failed.append(name)
    assert n > 3000 and not failed, failed[:10]


def test_fast_ids_equal_hf_on_odd_unicode(enc):
    windows = odd_windows()
    assert any("\u2060" in w for w in windows) and any(ODD.search(w) for w in windows)
    fast, ref = enc.encode_many(windows), hf_encode(enc.hf, windows)
    bad = [w[:80] for w, a, b in zip(windows, fast, ref) if a != b]
    assert not bad, bad[:5]
    assert all(enc.hf.decode(ids, skip_special_tokens=False) == w for w, ids in zip(windows[:500], ref[:500]))


def test_transformers_ids_equal_on_odd_unicode(enc, tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "tokenizer.json").write_text(enc.json)
    t = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                                             clean_up_tokenization_spaces=False)
    windows = odd_windows(600)
    for w, ids in zip(windows, enc.encode_many(windows)):
        assert t(w, add_special_tokens=False)["input_ids"] == ids
        assert t.decode(ids) == w
