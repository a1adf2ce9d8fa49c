"""GGUF export: read back with gguf.GGUFReader, every tensor and the tokenizer metadata
checked against the model and tokenizer.json, with llama.cpp's layout worked out here."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fmforge.cli import app
from fmforge.config import ModelConfig, TokenizerConfig
from fmforge.errors import UserError
from fmforge.model.transformer import Transformer
from fmforge.model.weights import save_model
from fmforge.tokenizer.bpe import EOT, PAD
from fmforge.tokenizer.chat import CHAT_TEMPLATE

gguf = pytest.importorskip("gguf")
TEXT = ["def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n" * 8,
        "The quick brown fox jumps over the lazy dog 1234567, isn't it? " * 8]
runner = CliRunner()


def _run(tmp_path, qk_norm=True, tie=True, digits=3, n_kv=2, vocab=352):
    """A run folder: fmforge's own BPE tokenizer + a model with non-trivial norm gains."""
    from fmforge.tokenizer.bpe import train_bpe

    run = tmp_path / "run"
    tok = train_bpe(TEXT, TokenizerConfig(vocab_size=300, min_frequency=1, digits=digits), run / "tokenizer")
    cfg = ModelConfig(vocab_size=vocab, d_model=64, n_layers=2, n_heads=4, n_kv_heads=n_kv, ffn_dim=96,
                      context_length=64, qk_norm=qk_norm, tie_embeddings=tie, rope_base=5000.0, norm_eps=1e-6)
    torch.manual_seed(0)
    net = Transformer(cfg)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    (run / "train").mkdir(parents=True)
    save_model(net.state_dict(), cfg, run / "train")
    return run, net.state_dict(), cfg, tok


def _export(run, out, *extra):
    res = runner.invoke(app, ["export", "gguf", "--model", str(run), "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return gguf.GGUFReader(out)


def _refused(*args) -> str:
    """The one-line UserError the CLI would print (exit 2) for `fmforge export gguf ARGS`."""
    res = runner.invoke(app, ["export", "gguf", *args])
    assert isinstance(res.exception, UserError), res.output
    return str(res.exception)


def _field(r, key):
    f = r.fields[key]
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        return [f.contents(i) for i in range(len(f.data))]
    return f.contents()


def _expected(state, cfg):
    """llama.cpp's names for every tensor, q/k rows reordered for ggml's adjacent-pair RoPE when
    the arch is llama (by explicit index arithmetic, not the exporter's reshape)."""
    hd, q, kv = cfg.head_dim, cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim

    def adjacent(w, heads):
        out = torch.empty_like(w)
        for h in range(heads):
            for i in range(hd // 2):
                for j in range(2):
                    out[h * hd + 2 * i + j] = w[h * hd + j * hd // 2 + i]
        return out

    exp = {"token_embd.weight": state["embed.weight"], "output_norm.weight": state["norm.weight"]}
    if not cfg.tie_embeddings:
        exp["output.weight"] = state["lm_head.weight"]
    for i in range(cfg.n_layers):
        s, b = f"layers.{i}.", f"blk.{i}."
        w = state[s + "attn.wqkv.weight"]
        wq, wk, wv = w[:q], w[q:q + kv], w[q + kv:]
        if not cfg.qk_norm:
            wq, wk = adjacent(wq, cfg.n_heads), adjacent(wk, cfg.kv_heads)
        else:
            exp[b + "attn_q_norm.weight"] = state[s + "attn.q_norm.weight"]
            exp[b + "attn_k_norm.weight"] = state[s + "attn.k_norm.weight"]
        f = cfg.hidden_dim
        exp.update({b + "attn_q.weight": wq, b + "attn_k.weight": wk, b + "attn_v.weight": wv,
                    b + "attn_output.weight": state[s + "attn.wo.weight"],
                    b + "attn_norm.weight": state[s + "attn_norm.weight"],
                    b + "ffn_norm.weight": state[s + "mlp_norm.weight"],
                    b + "ffn_gate.weight": state[s + "mlp.w13.weight"][:f],
                    b + "ffn_up.weight": state[s + "mlp.w13.weight"][f:],
                    b + "ffn_down.weight": state[s + "mlp.w2.weight"]})
    return {k: v.float().numpy() for k, v in exp.items()}


def _q8_0_decode(raw: np.ndarray, shape) -> np.ndarray:
    """ggml's Q8_0 by its definition: blocks of 32 values = one fp16 scale + 32 int8."""
    blocks = raw.reshape(-1, 34)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    qs = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    return (qs * d).reshape(shape)


@pytest.mark.parametrize("qk_norm,tie", [(False, False), (True, True)])
def test_gguf_tensors_and_metadata(tmp_path, qk_norm, tie):
    run, state, cfg, tok = _run(tmp_path, qk_norm, tie)
    r = _export(run, tmp_path / "m.gguf", "--dtype", "f32")
    arch = "qwen3" if qk_norm else "llama"
    assert _field(r, "general.architecture") == arch
    want_kv = {"context_length": 64, "embedding_length": 64, "block_count": 2, "feed_forward_length": 96,
               "attention.head_count": 4, "attention.head_count_kv": 2, "vocab_size": 352,
               "attention.key_length": 16, "rope.dimension_count": 16}
    for k, v in want_kv.items():
        assert _field(r, f"{arch}.{k}") == v, k
    assert _field(r, f"{arch}.rope.freq_base") == pytest.approx(5000.0)
    assert _field(r, f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)

    exp = _expected(state, cfg)
    got = {t.name: t for t in r.tensors}
    assert set(got) == set(exp)
    for name, want in exp.items():
        t = got[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
        # GGUF lists dims innermost first (ggml's ne): a (out, in) matrix reads as [in, out]
        assert list(t.shape) == list(reversed(want.shape)), name
        assert np.array_equal(np.asarray(t.data).reshape(want.shape), want), name


def test_gguf_tokenizer_metadata(tmp_path):
    run, state, cfg, tok = _run(tmp_path)
    r = _export(run, tmp_path / "m.gguf")
    spec = json.loads((run / "tokenizer" / "tokenizer.json").read_text())
    vocab = {**spec["model"]["vocab"], **{a["content"]: a["id"] for a in spec["added_tokens"]}}
    special = {a["content"] for a in spec["added_tokens"] if a["special"]}
    assert _field(r, "tokenizer.ggml.model") == "gpt2"
    assert _field(r, "tokenizer.ggml.pre") == "dbrx"
    tokens, types = _field(r, "tokenizer.ggml.tokens"), _field(r, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == 352  # the model's (padded) vocab, not the tokenizer's 300
    for text, i in vocab.items():
        assert tokens[i] == text
        assert types[i] == (3 if text in special else 1), text  # CONTROL / NORMAL
    assert all(types[i] == 5 for i in range(300, 352))  # UNUSED padding ids
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    assert _field(r, "tokenizer.ggml.merges") == merges
    assert _field(r, "tokenizer.ggml.eos_token_id") == tok.token_to_id(EOT)
    assert _field(r, "tokenizer.ggml.bos_token_id") == tok.token_to_id(EOT)
    assert _field(r, "tokenizer.ggml.padding_token_id") == tok.token_to_id(PAD)
    assert _field(r, "tokenizer.ggml.add_bos_token") is False
    assert _field(r, "tokenizer.chat_template") == CHAT_TEMPLATE
    # f16 by default: matrices f16 (values as numpy rounds them), norm gains f32
    t = {t.name: t for t in r.tensors}
    emb = state["embed.weight"].numpy()
    assert t["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert np.array_equal(np.asarray(t["token_embd.weight"].data).reshape(emb.shape), emb.astype(np.float16))
    assert t["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_gguf_single_digit_pre(tmp_path):
    run, *_ = _run(tmp_path, digits=1)
    assert _field(_export(run, tmp_path / "m.gguf"), "tokenizer.ggml.pre") == "qwen2"


@pytest.mark.parametrize("dtype", ["q8_0", "bf16"])
def test_gguf_quantized(tmp_path, dtype):
    run, state, cfg, _ = _run(tmp_path, qk_norm=True, tie=False)
    r = _export(run, tmp_path / "m.gguf", "--dtype", dtype)
    exp = _expected(state, cfg)
    for t in r.tensors:
        want = exp[t.name]
        raw = np.asarray(t.data)
        if want.ndim == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            assert np.array_equal(raw.reshape(want.shape), want)
        elif dtype == "bf16":
            assert t.tensor_type == gguf.GGMLQuantizationType.BF16
            got = (raw.copy().view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(want.shape)
            assert np.abs(got - want).max() <= np.abs(want).max() * 2 ** -8, t.name  # bf16: 8 mantissa bits
        else:
            assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0, t.name
            got = _q8_0_decode(raw, want.shape)
            scale = np.abs(want.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
            err = np.abs(got.reshape(-1, 32) - want.reshape(-1, 32))
            # half a step, plus the fp16 rounding of the scale (relative 2^-11) times |q| <= 127
            assert (err <= scale * (0.5 + 127 * 2 ** -11) + 1e-9).all(), t.name
    assert _field(r, "general.file_type") == {"q8_0": 7, "bf16": 32}[dtype]


def test_gguf_refusals(tmp_path):
    run, *_ = _run(tmp_path)
    other = tmp_path / "notes.gguf"
    other.write_text("mine")
    assert "not written by" in _refused("--model", str(run), "--out", str(other))
    assert other.read_text() == "mine"
    assert "inside the input" in _refused("--model", str(run), "--out", str(run / "train" / "m.gguf"))
    assert "q8_0" in _refused("--model", str(run), "--out", str(tmp_path / "m.gguf"), "--dtype", "q4")
    assert not (tmp_path / "m.gguf").exists()
    # a file this command wrote is replaced (atomically: no temp file left beside it)
    _export(run, tmp_path / "m.gguf")
    _export(run, tmp_path / "m.gguf", "--dtype", "q8_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "notes.gguf", "run"]
    # a normaliser llama.cpp would not apply: refused, not silently dropped
    spec = json.loads((run / "tokenizer" / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "NFKC"}
    (run / "tokenizer" / "tokenizer.json").write_text(json.dumps(spec))
    assert "NFKC" in _refused("--model", str(run), "--out", str(tmp_path / "n.gguf"))
    assert not (tmp_path / "n.gguf").exists()


def _llama_cpp():
    try:
        from llama_cpp import Llama
    except Exception as e:  # not installed, or its shared library missing (RuntimeError)
        pytest.skip(f"llama-cpp-python not usable here ({type(e).__name__}); pip install '.[llamacpp]'")
    return Llama


@pytest.mark.parametrize("qk_norm", [False, True])
def test_llama_cpp_computes_fmforge_logits(tmp_path, qk_norm):
    """llama.cpp itself loads the f32 file and gives fmforge's logits at every position, and its
    tokenizer gives HF tokenizers' ids (this checks the RoPE permutation end to end)."""
    Llama = _llama_cpp()
    run, state, cfg, tok = _run(tmp_path, qk_norm=qk_norm, tie=qk_norm)
    _export(run, tmp_path / "m.gguf", "--dtype", "f32")
    from fmforge.model.weights import load_model
    net = load_model(run / "train")
    llm = Llama(str(tmp_path / "m.gguf"), n_ctx=64, n_threads=1, logits_all=True, verbose=False)
    for text in TEXT + ["<|user|>\nisn't 1234567 naïve?<|endoftext|>\n<|assistant|>\n"]:
        ids = tok.encode(text[:120]).ids[:60]
        assert llm.tokenize(text[:120].encode(), add_bos=False, special=True)[:60] == ids
        llm.reset()
        llm.eval(ids)
        with torch.no_grad():
            want = net(torch.tensor([ids]))[0].numpy()
        assert np.abs(np.asarray(llm.scores[:len(ids)]) - want).max() < 1e-3
