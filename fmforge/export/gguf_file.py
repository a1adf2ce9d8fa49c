"""`fmforge export --format gguf`: an fmforge model -> one GGUF file that llama.cpp loads.

Architecture. A plain model is llama.cpp's `llama`; a QK-norm model (the demo's) is its
`qwen3`, whose graph applies per-head RMSNorm to q and k before RoPE, exactly as fmforge
does (its `llama` graph has no QK-norm, so exporting one there would compute something else).

RoPE layout. fmforge rotates pairs (i, i + head_dim/2) of each head ("half-split", HF's
`rotate_half`, ggml's NEOX mode). llama.cpp's `qwen3` uses NEOX, so its q/k weights go as
they are. Its `llama` uses ggml's NORM mode, which rotates adjacent pairs (2i, 2i+1) with the
same frequency for pair i, so the rows of each q and k head are reordered to put half-split
row i + j*head_dim/2 at row 2i + j: what llama.cpp's own HF converter does to Llama weights.

Tokenizer. fmforge's byte-level BPE is llama.cpp's `gpt2` model. The pre-tokenizer regex
is named by `tokenizer.ggml.pre`: fmforge's split (GPT-4's, digits in groups of up to 3) is
the regex llama.cpp uses for `dbrx` (the same one as `llama-bpe`, but `llama-bpe` also turns
on ignore_merges, which HF's BPE here does not use); with single digits it is `qwen2`'s. Any
other pre-tokenizer or a Unicode normaliser (llama.cpp's BPE applies none) is refused, as is
anything else the file could not reproduce.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from fmforge.config import ModelConfig
from fmforge.errors import InputNotFound, UserError
from fmforge.export.hf import refuse_unexportable
from fmforge.tokenizer.bpe import EOT, PAD, split_pattern
from fmforge.tokenizer.chat import CHAT_TEMPLATE

DTYPES = ("f32", "f16", "bf16", "q8_0")
MARK_KEY = "fmforge.source"  # our own key: an existing file holding it is one this command wrote


def arch_of(cfg: ModelConfig) -> str:
    return "qwen3" if cfg.qk_norm else "llama"


def halfsplit_to_adjacent(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of q or k (n_heads*head_dim, d): row h*hd + j*hd/2 + i moves to h*hd + 2i + j."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def gguf_tensors(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """llama.cpp's tensor names -> fp32 tensors in torch's (out, in) layout (GGUF stores the
    dims reversed, which is what ggml's (in, out) `ne` order reads)."""
    from gguf import MODEL_TENSOR as T, TENSOR_NAMES

    def name(t, i=None):
        return TENSOR_NAMES[t].format(bid=i) + ".weight"

    permute = arch_of(cfg) == "llama"
    q, kv = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    out = {name(T.TOKEN_EMBD): state["embed.weight"]}
    for i in range(cfg.n_layers):
        s = f"layers.{i}."
        wq, wk, wv = state[s + "attn.wqkv.weight"].split([q, kv, kv], dim=0)
        if permute:
            wq, wk = halfsplit_to_adjacent(wq, cfg.n_heads), halfsplit_to_adjacent(wk, cfg.kv_heads)
        gate, up = state[s + "mlp.w13.weight"].chunk(2, dim=0)
        out[name(T.ATTN_NORM, i)] = state[s + "attn_norm.weight"]
        out[name(T.ATTN_Q, i)], out[name(T.ATTN_K, i)], out[name(T.ATTN_V, i)] = wq, wk, wv
        if cfg.qk_norm:
            out[name(T.ATTN_Q_NORM, i)] = state[s + "attn.q_norm.weight"]
            out[name(T.ATTN_K_NORM, i)] = state[s + "attn.k_norm.weight"]
        out[name(T.ATTN_OUT, i)] = state[s + "attn.wo.weight"]
        out[name(T.FFN_NORM, i)] = state[s + "mlp_norm.weight"]
        out[name(T.FFN_GATE, i)], out[name(T.FFN_UP, i)] = gate, up
        out[name(T.FFN_DOWN, i)] = state[s + "mlp.w2.weight"]
    out[name(T.OUTPUT_NORM)] = state["norm.weight"]
    if not cfg.tie_embeddings:  # tied: llama.cpp reuses token_embd when output.weight is absent
        out[name(T.OUTPUT)] = state["lm_head.weight"]
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def encode_tensor(t: torch.Tensor, dtype: str):
    """(array, ggml type) for one tensor. Norm gains (1-D) stay f32, as in llama.cpp's own
    converter; a q8_0 matrix whose rows are not a multiple of its 32-value block falls back to f16."""
    from gguf import GGMLQuantizationType as Q, quants

    a = t.numpy()
    want = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[dtype]
    if a.ndim == 1 or want == Q.F32:
        return a, Q.F32
    if want == Q.Q8_0 and a.shape[-1] % 32:
        want = Q.F16
    if want == Q.F16:
        return a.astype(np.float16), Q.F16
    return quants.quantize(a, want), want


def pre_tokenizer_name(tok: dict, where: Path) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a tokenizer.json, or a UserError saying why none fits."""
    pre = tok.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if any(s.get("add_prefix_space") for s in steps):  # llama.cpp's BPE adds no leading space
        raise UserError(f"{where}: ByteLevel add_prefix_space=true has no llama.cpp counterpart; not exported to GGUF")
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        known = {split_pattern(3): "dbrx", split_pattern(1): "qwen2"}
        if regex in known and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert"):
            return known[regex]
        raise UserError(f"{where}: pre-tokenizer regex {regex!r} is not one llama.cpp has a "
                        f"`tokenizer.ggml.pre` for; GGUF export would tokenize differently, so it is refused")
    raise UserError(f"{where}: pre-tokenizer {kinds} has no llama.cpp counterpart; not exported to GGUF")


def tokenizer_metadata(tok_file: Path, n_vocab: int) -> dict:
    """What tokenizer.ggml.* holds, read from an HF tokenizer.json of fmforge's byte-level BPE."""
    from gguf import TokenType

    try:
        tok = json.loads(Path(tok_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{tok_file} is not a readable tokenizer.json ({e})") from None
    model = tok.get("model") or {}
    if model.get("type") != "BPE" or (tok.get("decoder") or {}).get("type") != "ByteLevel":
        raise UserError(f"{tok_file}: only byte-level BPE tokenizers export to GGUF "
                        f"(model {model.get('type')!r}, decoder {(tok.get('decoder') or {}).get('type')!r})")
    if tok.get("normalizer"):
        raise UserError(f"{tok_file}: normalizer {tok['normalizer'].get('type')!r} is one llama.cpp's BPE "
                        f"does not apply; not exported to GGUF (train the tokenizer with normalize: none)")
    pre = pre_tokenizer_name(tok, tok_file)
    ids = dict(model["vocab"])
    added = {a["content"]: a for a in tok.get("added_tokens", [])}
    ids.update({c: a["id"] for c, a in added.items()})
    if max(ids.values()) >= n_vocab:
        raise UserError(f"{tok_file}: token id {max(ids.values())} does not fit the model's vocab_size {n_vocab}")
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]  # ids the tokenizer never produces (a padded vocab)
    types = [int(TokenType.UNUSED)] * n_vocab
    for text, i in ids.items():
        tokens[i] = text
        a = added.get(text)
        types[i] = int(TokenType.NORMAL if a is None else TokenType.CONTROL if a.get("special")
                       else TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    eos, pad = ids.get(EOT), ids.get(PAD)
    if eos is None:
        raise UserError(f"{tok_file}: no {EOT} token; fmforge's tokenizers end documents with it")
    return {"pre": pre, "tokens": tokens, "types": types, "merges": merges,
            "eos": eos, "bos": eos, "pad": eos if pad is None else pad}


def check_out(out: Path, inputs: list[Path]) -> None:
    """--out is a new file, or a GGUF file this command wrote before (it holds MARK_KEY)."""
    out = Path(out)
    for inp in inputs:
        i = Path(inp).resolve()
        if out.resolve() == i or i in out.resolve().parents:
            raise UserError(f"--out {out} is inside the input {inp}: choose a path outside it "
                            "(fmforge never writes into its inputs)")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / 'model.gguf'}")
    if out.exists():
        from gguf import GGUFReader
        try:
            ours = MARK_KEY in GGUFReader(out).fields
        except Exception:  # not GGUF at all: struct/ValueError of every kind
            ours = False
        if not ours:
            raise UserError(f"--out {out} exists and was not written by `fmforge export --format gguf`: "
                            "choose another file name")
    if not out.parent.is_dir():
        raise InputNotFound(f"--out {out}: folder {out.parent} does not exist")


def write_gguf(mdir: Path, tok_file: Path, out: Path, dtype: str = "f16", name: str | None = None) -> dict:
    """Write the model in `mdir` (+ its tokenizer) to `out` atomically; returns a short summary."""
    import gguf
    from fmforge.model.weights import load_model

    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    net = load_model(mdir)
    cfg = net.cfg
    refuse_unexportable(cfg, "GGUF (llama.cpp)")
    vocab = tokenizer_metadata(tok_file, cfg.vocab_size)
    arch = arch_of(cfg)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    w = gguf.GGUFWriter(tmp, arch)
    try:
        w.add_name(name or mdir.resolve().parent.name or mdir.name)
        w.add_string(MARK_KEY, str(mdir))
        file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
        w.add_file_type(int(file_type))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(cfg.context_length)
        w.add_embedding_length(cfg.d_model)
        w.add_block_count(cfg.n_layers)
        w.add_feed_forward_length(cfg.hidden_dim)
        w.add_head_count(cfg.n_heads)
        w.add_head_count_kv(cfg.kv_heads)
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(cfg.rope_base)
        w.add_layer_norm_rms_eps(cfg.norm_eps)
        w.add_vocab_size(cfg.vocab_size)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(vocab["pre"])
        w.add_token_list(vocab["tokens"])
        w.add_token_types(vocab["types"])
        w.add_token_merges(vocab["merges"])
        w.add_bos_token_id(vocab["bos"])
        w.add_eos_token_id(vocab["eos"])
        w.add_pad_token_id(vocab["pad"])
        w.add_add_bos_token(False)  # fmforge trains without a BOS; documents are split by EOT
        w.add_add_eos_token(False)
        w.add_chat_template(CHAT_TEMPLATE)
        types = {}
        for tname, t in gguf_tensors(net.state_dict(), cfg).items():
            arr, qtype = encode_tensor(t, dtype)
            w.add_tensor(tname, arr, raw_dtype=qtype)
            types[qtype.name] = types.get(qtype.name, 0) + 1
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    return {"arch": arch, "pre": vocab["pre"], "tensor_types": types, "bytes": out.stat().st_size}
