"""Issue 9, the tokenizer side: a user's Parquet, too little text for the vocabulary asked,
a split with no validation side, --out ownership and one-line errors."""
from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fmforge.config import TokenizerConfig
from fmforge.data.formats import DataError
from fmforge.errors import DegenerateResult, InputNotFound, UserError
from fmforge.tokenizer.bpe import train_bpe
from fmforge.tokenizer.encode import encode_corpus, is_validation
from fmforge.tokenizer.sample import sample_docs
from fmforge.tokenizer.shards import open_split
from tests.test_data_prepare import essay


def cli(*args):
    from fmforge.cli import app

    return CliRunner().invoke(app, list(map(str, args)))


@pytest.fixture(scope="module")
def user_parquet(tmp_path_factory) -> Path:
    """A user's own Parquet: a text column and nothing fmforge wrote (no id/source/meta)."""
    rng = random.Random(5)
    p = tmp_path_factory.mktemp("user") / "mine.parquet"
    pq.write_table(pa.table({"text": [essay(rng, 120) for _ in range(40)], "score": list(range(40))}), p)
    return p


def test_train_and_encode_a_users_parquet(user_parquet, tmp_path):
    tok = train_bpe(sample_docs(user_parquet, 1 << 20), TokenizerConfig(vocab_size=300), tmp_path / "tok")
    s = encode_corpus(tok, user_parquet, tmp_path / "shards", 0.2, workers=1)
    assert s.train_docs + s.val_docs == 40 and s.val_docs > 0
    again = encode_corpus(tok, user_parquet, tmp_path / "shards2", 0.2, workers=1)
    assert again.val_docs == s.val_docs  # ids filled in deterministically: the same split
    assert sum(len(x) for x in open_split(tmp_path / "shards", "val")) == s.val_docs


def test_a_parquet_without_text_is_one_clear_error(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["x"]}), p)
    with pytest.raises(DataError, match=r"no 'text' column \(columns: body\).*fmforge data collect"):
        list(sample_docs(p, 100))
    res = cli("tokenizer", "train", "--data", p, "--out", tmp_path / "tok")
    assert isinstance(res.exception, DataError) and not (tmp_path / "tok").exists()


def test_too_little_text_for_the_vocabulary_is_degenerate(tmp_path):
    with pytest.raises(DegenerateResult, match=r"0 documents, 0 bytes.*lower tokenizer\.vocab_size"):
        train_bpe(iter([]), TokenizerConfig(vocab_size=4096), tmp_path / "tok")
    with pytest.raises(DegenerateResult, match=r"of the 3,835 merges asked.*1 documents"):
        train_bpe(iter(["a short text, a short text"]), TokenizerConfig(vocab_size=4096), tmp_path / "tok")
    assert not (tmp_path / "tok" / "tokenizer.json").exists()


def test_a_split_without_validation_documents_names_val_fraction(user_parquet, tmp_path):
    ids = [f"d{i}" for i in range(3)]
    one = tmp_path / "one.parquet"
    pq.write_table(pa.table({"id": ids, "text": ["some text here"] * 3}), one)
    fraction = 0.01
    assert not any(is_validation(i, fraction) for i in ids)  # the premise, computed independently
    with pytest.raises(DegenerateResult, match=r"data\.val_fraction=0\.01 leaves no validation document"):
        encode_corpus(tmp_path / "missing-is-not-reached", one, tmp_path / "shards", fraction, workers=1)
    assert not (tmp_path / "shards").exists()


def test_cli_out_ownership_and_missing_inputs(user_parquet, tmp_path):
    res = cli("tokenizer", "train", "--data", user_parquet, "--vocab-size", "300", "--set", "data.val_fraction=0.2",
              "--out", user_parquet.parent)
    assert isinstance(res.exception, UserError) and "input" in str(res.exception)
    res = cli("tokenizer", "train", "--data", tmp_path / "nope", "--out", tmp_path / "tok")
    assert isinstance(res.exception, InputNotFound)
    res = cli("tokenizer", "train", "--data", user_parquet, "--vocab-size", "300", "--set", "data.val_fraction=0.2",
              "--out", tmp_path / "tok")
    assert res.exit_code == 0, res.output
    res = cli("tokenizer", "encode", "--tokenizer", tmp_path / "nope", "--data", user_parquet, "--out", tmp_path / "s",
              "--set", "data.val_fraction=0.2")
    assert isinstance(res.exception, InputNotFound) and not (tmp_path / "s").exists()
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "train-000000.bin").write_bytes(b"not ours")
    res = cli("tokenizer", "encode", "--tokenizer", tmp_path / "tok", "--data", user_parquet, "--out", tmp_path / "s",
              "--set", "data.val_fraction=0.2")
    assert isinstance(res.exception, UserError) and (tmp_path / "s" / "train-000000.bin").read_bytes() == b"not ours"
    res = cli("tokenizer", "report", "-t", tmp_path / "tok", "-d", tmp_path / "tok" / "tokenizer.json.gz")
    assert isinstance(res.exception, InputNotFound)
