"""A fast encoder with the ids of a `tokenizer.json`: tiktoken built from its merges.

HF `tokenizers` is the reference: it trains, and its `tokenizer.json` is what users and
`transformers` load. For encoding a corpus, tiktoken is several times faster per core
with the same ids, so when a tokenizer.json is a byte-level BPE that tiktoken can express
(GPT-4 or GPT-2 style split regex, NFC/NFKC/no normaliser, ids in merge order) we build
an `Encoding` from it and check it against HF on probe strings, the text of every token
and sample text; otherwise, or on any mismatch, `Encoder` uses HF itself.

Document text is always encoded as ordinary text: a literal "<|endoftext|>" inside a
document is spelled out in bytes, never turned into the boundary token (HF is told the
same with `encode_special_tokens`).
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from tokenizers import Tokenizer

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Strings where regex engines, normalisers and merge orders are most likely to disagree.
PROBES = [
    "Hello, world! It's 12345678 o'clock; we'll've  done   it.\r\n\r\n\tTabs\tand  spaces   \n",
    "Word\u2060joiner\u2060—dash\u2060— “curly” ‘quotes’ … ﬁ ligature, ½, ², Å vs A\u030a, e\u0301",
    "CJK 漢字かなカナ한국어, emoji 👩\u200d👩\u200d👧\u200d👦 🇫🇷 ✊🏽, RTL שלום عربى, Devanagari हिन्दी",
    "def f(x):\n    return x**2  # comment\n\n\n    \n}\n<|endoftext|> <|pad|> </s>",
    "   leading spaces, trailing   ", "", " ", "\n", "a", "0.000001 1,000,000 3.14159 2024-01-01T00:00Z",
    "ALLCAPS'S DON'T I'M YOU'RE WE'VE HE'LL SHE'D",
]


def byte_chars() -> dict[int, str]:
    """The GPT-2 byte-level alphabet: byte b is shown as one printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def _pattern(pre: Optional[dict]) -> Optional[str]:
    """The split regex of a byte-level pre-tokenizer tiktoken can run, else None."""
    if not pre:
        return None
    if pre.get("type") == "ByteLevel":
        return GPT2_PATTERN if pre.get("use_regex", True) and not pre.get("add_prefix_space") else None
    if pre.get("type") != "Sequence" or len(pre.get("pretokenizers", [])) != 2:
        return None
    split, level = pre["pretokenizers"]
    ok = (split.get("type") == "Split" and "Regex" in split.get("pattern", {})
          and split.get("behavior") == "Isolated" and not split.get("invert")
          and level.get("type") == "ByteLevel" and not level.get("use_regex", True)
          and not level.get("add_prefix_space"))
    return split["pattern"]["Regex"] if ok else None


def tiktoken_from_json(spec: dict):
    """(tiktoken.Encoding, "") for an expressible tokenizer.json, else (None, why not)."""
    import tiktoken

    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("dropout") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix"):
        return None, "not a plain BPE model"
    norm = spec.get("normalizer")
    if norm is not None and norm.get("type") not in ("NFC", "NFKC"):
        return None, f"normaliser {norm.get('type')} is not supported by the fast encoder"
    pattern = _pattern(spec.get("pre_tokenizer"))
    if pattern is None:
        return None, "pre-tokenizer is not a byte-level split tiktoken can run"
    added = spec.get("added_tokens") or []
    if any(not a.get("special") for a in added):
        return None, "has non-special added tokens"
    special = {a["content"]: a["id"] for a in added}
    to_byte = {c: b for b, c in byte_chars().items()}
    ranks: dict[bytes, int] = {}
    for token, i in model["vocab"].items():
        if token in special:
            continue
        if any(c not in to_byte for c in token):
            return None, f"vocabulary token {token!r} is not byte-level"
        ranks[bytes(to_byte[c] for c in token)] = i
    if len(ranks) != len(model["vocab"]) - sum(1 for t in special if t in model["vocab"]):
        return None, "two vocabulary tokens decode to the same bytes"
    if any(bytes([b]) not in ranks for b in range(256)):
        return None, "some single bytes are missing from the vocabulary"
    # tiktoken merges the adjacent pair whose concatenation has the lowest id, HF the
    # pair earliest in its merge list: the same order only if ids grow with the merges.
    merges = model.get("merges", [])
    last = -1
    for m in merges:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        i = model["vocab"].get(a + b)
        if i is None or i <= last:
            return None, "token ids are not in merge order"
        last = i
    if len(ranks) != 256 + len(merges):  # tiktoken would use a token no merge makes
        return None, "the vocabulary has tokens that no merge makes"
    enc = tiktoken.Encoding("fmforge", pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)
    return enc, ""


class Encoder:
    """Text to ids (and back) with the ids of `tokenizer.json`; tiktoken when it is verified."""

    def __init__(self, tokenizer_json: str, fast: bool = True, check_texts: Sequence[str] = (), check: bool = True):
        """`check=False` trusts an earlier check of the same json (encode workers)."""
        self.json = tokenizer_json
        self._hf: Optional[Tokenizer] = None
        spec = json.loads(tokenizer_json)
        form = (spec.get("normalizer") or {}).get("type")
        self.form = form if form in ("NFC", "NFD", "NFKC", "NFKD") else None  # others: not reproducible here
        self.tiktoken, self.why_not = tiktoken_from_json(spec) if fast else (None, "fast encoder turned off")
        if self.tiktoken is not None and check:
            bad = first_mismatch(self, list(PROBES) + vocab_strings(self.tiktoken) + list(check_texts))
            if bad is not None:
                self.tiktoken, self.why_not = None, f"tiktoken ids differ from HF on {bad[:60]!r}"
        self.kind = "tiktoken" if self.tiktoken is not None else "hf"

    @property
    def hf(self) -> Tokenizer:
        if self._hf is None:
            self._hf = Tokenizer.from_str(self.json)
            self._hf.encode_special_tokens = True  # document text never yields special tokens
        return self._hf

    def normalize(self, text: str) -> str:
        return unicodedata.normalize(self.form, text) if self.form else text

    @classmethod
    def from_path(cls, path: Path, **kw) -> "Encoder":
        from fmforge.tokenizer.bpe import read_tokenizer_json

        return cls(read_tokenizer_json(path), **kw)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.json.encode()).hexdigest()[:16]

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def token_to_id(self, token: str) -> Optional[int]:
        return self.hf.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        if self.tiktoken is not None:
            return self.tiktoken.encode_ordinary(self.normalize(text))
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        if self.tiktoken is not None:
            enc, norm = self.tiktoken.encode_ordinary, self.normalize
            return [enc(norm(t)) for t in texts]
        return hf_encode(self.hf, texts)

    def encode_arrays(self, texts: Sequence[str], dtype) -> Iterator[np.ndarray]:
        """Each text's ids as an array, made one text (HF: 64) at a time: lists of Python ints are big."""
        if self.tiktoken is not None:
            for t in texts:
                yield np.array(self.encode(t), dtype=dtype)
            return
        for i in range(0, len(texts), 64):
            yield from (np.array(ids, dtype=dtype) for ids in hf_encode(self.hf, texts[i : i + 64]))

    def decode(self, ids: Sequence[int]) -> str:
        if self.tiktoken is not None:
            return self.tiktoken.decode_bytes(ids).decode("utf-8", "replace")
        return self.hf.decode(list(ids), skip_special_tokens=False)


def vocab_strings(enc) -> list[str]:
    """Every token that is whole UTF-8, as text. Encoding a token's own text is where
    tiktoken (which takes a piece that is in the vocabulary whole) and HF (which replays
    the merges) would part if ids were not in merge order, so each is checked."""
    out = []
    for b in enc.token_byte_values():
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return out


def hf_encode(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]


def first_mismatch(enc: Encoder, texts: Sequence[str]) -> Optional[str]:
    """The first text whose fast ids differ from HF's, or None."""
    fast = enc.encode_many(texts)
    ref = hf_encode(enc.hf, texts)
    return next((t for t, a, b in zip(texts, fast, ref) if a != b), None)
