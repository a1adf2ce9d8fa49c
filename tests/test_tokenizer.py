"""Tokenizer training, the fast encoder's identity with HF, transformers, report and CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from typer.testing import CliRunner

from fmforge.config import TokenizerConfig
from fmforge.data.documents import read_docs
from fmforge.errors import UserError
from fmforge.tokenizer.bpe import EOT, PAD, load, save, train_bpe
from fmforge.tokenizer.fast import PROBES, Encoder, hf_encode
from fmforge.tokenizer.report import measure, table_rows
from fmforge.tokenizer.sample import sample_docs

ODD = ["Word\u2060joiner\u2060—dash", "emoji 👩\u200d👩\u200d👧 🇫🇷 ✊🏽", "CJK 漢字かなカナ한국어 中文", "e\u0301 Å ﬁ ½ ²",
       "x = 1234567890 + 3.14159", "  indented\r\n\ttabs\n\n\n", "I'LL we've they'd DON'T"]


@pytest.fixture(scope="module")
def texts(prepared) -> list[str]:
    return [d["text"] for d in read_docs(prepared, columns=["text"])]


@pytest.fixture(scope="module")
def tok_dir(texts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_bpe(iter(texts), TokenizerConfig(vocab_size=1024), out)
    return out


def test_trained_tokenizer_has_specials_bytes_and_configs(tok_dir):
    tok = load(tok_dir)
    assert tok.get_vocab_size() == 1024
    cfg = TokenizerConfig()
    assert [tok.token_to_id(t) for t in cfg.special_tokens] == list(range(len(cfg.special_tokens)))
    conf = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert conf["eos_token"] == EOT and conf["pad_token"] == PAD
    assert tok.encode("\x00\x7f\u2060", add_special_tokens=False).ids  # no unknown tokens: bytes cover all


def test_fast_encoder_is_tiktoken_and_equals_hf(tok_dir, texts):
    enc = Encoder.from_path(tok_dir)
    assert enc.kind == "tiktoken", enc.why_not
    sample = texts + PROBES + ODD
    assert enc.encode_many(sample) == hf_encode(enc.hf, sample)  # enc.hf: special-token text stays text


def test_round_trip_exact_on_stdlib(tok_dir, texts):
    enc = Encoder.from_path(tok_dir)
    hf = load(tok_dir)
    for t in texts + ODD:
        ids = enc.encode(t)
        assert enc.tiktoken.decode_bytes(ids) == t.encode("utf-8")
    for t in texts[:20] + ODD:
        assert hf.decode(enc.encode(t), skip_special_tokens=False) == t


def test_special_token_text_in_a_document_stays_text(tok_dir):
    enc = Encoder.from_path(tok_dir)
    eot = enc.token_to_id(EOT)
    ids = enc.encode(f"a {EOT} b")
    assert eot not in ids and enc.decode(ids) == f"a {EOT} b"
    assert ids == enc.hf.encode(f"a {EOT} b", add_special_tokens=False).ids


@pytest.mark.parametrize("digits,pieces", [(3, ["123", "456", "7"]), (1, ["1", "2", "3", "4", "5", "6", "7"])])
def test_digit_groups(texts, tmp_path, digits, pieces):
    tok = train_bpe(iter(texts[:20]), TokenizerConfig(vocab_size=400, digits=digits), tmp_path)
    split = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str("1234567")]
    assert split == pieces
    enc = Encoder.from_path(tmp_path)
    assert enc.kind == "tiktoken" and enc.encode("x=1234567") == hf_encode(tok, ["x=1234567"])[0]


def test_nfkc_normaliser_is_in_the_file_and_fast_path_matches(texts, tmp_path):
    tok = train_bpe(iter(texts[:20] + ODD), TokenizerConfig(vocab_size=400, normalize="NFKC"), tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["normalizer"]["type"] == "NFKC"
    enc = Encoder.from_path(tmp_path)
    assert enc.kind == "tiktoken", enc.why_not
    assert enc.encode_many(ODD + PROBES) == hf_encode(enc.hf, ODD + PROBES)
    assert enc.decode(enc.encode("ﬁ ½")) == "fi 1⁄2"


def _unusual_tokenizer(texts, out: Path, lowercase: bool) -> Path:
    """GPT-2 style byte-level BPE (ByteLevel's own regex), optionally lowercasing."""
    tok = Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts[:20], trainers.BpeTrainer(vocab_size=400, special_tokens=[EOT], show_progress=False,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    save(tok, out)
    return out


def test_gpt2_style_tokenizer_is_fast_too(texts, tmp_path):
    enc = Encoder.from_path(_unusual_tokenizer(texts, tmp_path, lowercase=False))
    assert enc.kind == "tiktoken", enc.why_not
    assert enc.encode_many(texts[:10] + ODD) == hf_encode(enc.hf, texts[:10] + ODD)


def test_unsupported_tokenizer_falls_back_to_hf(texts, tmp_path):
    enc = Encoder.from_path(_unusual_tokenizer(texts, tmp_path, lowercase=True))
    assert enc.kind == "hf" and "normaliser" in enc.why_not
    assert enc.encode("Hello") == enc.hf.encode("Hello", add_special_tokens=False).ids


def test_transformers_loads_with_identical_ids(tok_dir, texts):
    transformers = pytest.importorskip("transformers")
    hf = load(tok_dir)
    for loader in (transformers.AutoTokenizer.from_pretrained, transformers.PreTrainedTokenizerFast.from_pretrained):
        t = loader(str(tok_dir))
        assert t.eos_token == EOT and t.pad_token == PAD and t.eos_token_id == hf.token_to_id(EOT)
        for text in texts[:30] + ODD + PROBES:
            ids = t(text, add_special_tokens=False)["input_ids"]
            assert ids == hf.encode(text, add_special_tokens=False).ids
            assert t.decode(ids) == text


def test_sample_is_deterministic_within_budget_and_excludes(prepared, texts):
    total = sum(len(t.encode()) for t in texts)
    a = list(sample_docs(prepared, total // 4))
    assert a == list(sample_docs(prepared, total // 4))
    assert total // 4 <= sum(len(t.encode()) for t in a) < total // 4 + max(len(t.encode()) for t in texts)
    assert set(a) <= set(texts) and len(a) < len(texts)
    assert list(sample_docs(prepared, 10 * total)) == texts  # all, in corpus order
    assert list(sample_docs(prepared, 10 * total, exclude=lambda i: True)) == []


def test_report_measures_and_lists_round_trip_failures(tok_dir, prepared, texts, tmp_path):
    lower = _unusual_tokenizer(texts, tmp_path / "lower", lowercase=True)
    good, bad = measure([tok_dir, lower], [prepared])
    t = good.total
    assert t.docs == len(texts) and t.bytes == sum(len(x.encode()) for x in texts)
    assert 2.0 < t.bytes_per_token < 6.0 and t.tokens_per_word > 1 and 0.5 < good.utilisation <= 1
    assert good.round_trip_failures == 0 and good.encoder == "tiktoken"
    assert bad.round_trip_failures > 0 and bad.failed_docs and bad.encoder == "hf"
    head, rows = table_rows([good, bad])
    assert len(rows) == 2 and rows[0][-1] == "exact" and "FAILED" in rows[1][-1]


def test_cli_train_encode_report(prepared, tmp_path):
    from fmforge.cli import app

    r = CliRunner()
    res = r.invoke(app, ["tokenizer", "train", "--data", str(prepared), "--vocab-size", "300",
                         "--digits", "1", "--out", str(tmp_path / "tok")])
    assert res.exit_code == 0, res.output
    assert load(tmp_path / "tok").get_vocab_size() == 300
    res = r.invoke(app, ["tokenizer", "encode", "--tokenizer", str(tmp_path / "tok"), "--data", str(prepared),
                         "--out", str(tmp_path / "shards"), "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "shards" / "train-000000.bin").exists()
    res = r.invoke(app, ["tokenizer", "report", "-t", str(tmp_path / "tok"), "-d", str(prepared),
                         "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r.json").read_text())[0]["round_trip_failures"] == 0


def test_ids_out_of_merge_order_are_not_given_to_tiktoken(tok_dir):
    spec = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = ("".join(m) if isinstance(m, list) else m.replace(" ", "") for m in spec["model"]["merges"][:2])
    vocab[a], vocab[b] = vocab[b], vocab[a]
    enc = Encoder(json.dumps(spec))
    assert enc.kind == "hf" and "merge order" in enc.why_not


def test_a_fast_encoder_that_differs_from_hf_is_dropped(tok_dir, monkeypatch):
    import fmforge.tokenizer.fast as fast

    real = fast.tiktoken_from_json

    def wrong_digits(spec):  # same merges, but digits split one by one: ids differ on numbers
        pre = spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]
        pre["Regex"] = pre["Regex"].replace(r"\p{N}{1,3}", r"\p{N}{1,1}")
        return real(spec)

    monkeypatch.setattr(fast, "tiktoken_from_json", wrong_digits)
    enc = Encoder.from_path(tok_dir)
    assert enc.kind == "hf" and "differ" in enc.why_not


def test_report_json_never_overwrites_a_file_it_did_not_write(prepared, tok_dir, tmp_path):
    """--json at a user's file (here a JSONL corpus that is not an input of this call) is
    refused before measuring and the file is unchanged; a folder or a missing folder is an
    error too, not a traceback after the work; a report written before is replaced."""
    from fmforge.cli import app

    r = CliRunner()
    mine = tmp_path / "corpus.jsonl"
    mine.write_text('{"text": "keep me"}\n')
    args = ["tokenizer", "report", "-t", str(tok_dir), "-d", str(prepared), "--json"]
    res = r.invoke(app, args + [str(mine)])
    assert isinstance(res.exception, UserError) and "not written by" in str(res.exception)
    assert mine.read_text() == '{"text": "keep me"}\n'
    for bad in (tmp_path, tmp_path / "missing" / "r.json"):
        res = r.invoke(app, args + [str(bad)])
        assert isinstance(res.exception, UserError) and str(bad) in str(res.exception), res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]  # no temp file left
    ok = tmp_path / "r.json"
    for _ in range(2):  # the second run replaces its own report
        res = r.invoke(app, args + [str(ok)])
        assert res.exit_code == 0, res.output
    assert json.loads(ok.read_text())[0]["round_trip_failures"] == 0
