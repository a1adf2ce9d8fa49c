"""Train a byte-level BPE tokenizer with HF `tokenizers` and load it back.

Byte-level: every string round-trips, no unknown tokens. Pre-tokenisation splits text
GPT-4 style (letters, digit groups of at most 3 (or 1), punctuation runs, whitespace).
An optional Unicode normaliser (NFC/NFKC) is stored in the tokenizer, so every user of
the file applies it. The result is a standard `tokenizer.json`, loadable by `transformers`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from fmforge.errors import InputNotFound, UserError
from fmforge.outputs import atomic_write_text
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

if TYPE_CHECKING:  # encode workers import this module: pydantic would cost them 0.4 s each
    from fmforge.config import TokenizerConfig

EOT = "<|endoftext|>"
PAD = "<|pad|>"
NORMALIZERS = {"NFC": normalizers.NFC, "NFKC": normalizers.NFKC}


def split_pattern(digits: int) -> str:
    return (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,%d}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
        % digits
    )


def new_tokenizer(cfg: TokenizerConfig) -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=False))
    if cfg.normalize != "none":
        tok.normalizer = NORMALIZERS[cfg.normalize]()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_pattern(cfg.digits)), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def sample_texts(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    """The first texts of a stream, up to about `max_bytes` of UTF-8 (the last one may overshoot)."""
    total = 0
    for t in texts:
        yield t
        total += len(t.encode("utf-8", "surrogatepass"))
        if total >= max_bytes:
            return


def train_bpe(texts: Iterable[str], cfg: TokenizerConfig, out_dir: Path) -> Tokenizer:
    """Train on `texts` (streamed; capped at cfg.sample_bytes) and save to `out_dir`."""
    if EOT not in cfg.special_tokens:
        raise UserError(f"tokenizer.special_tokens must include the document boundary token {EOT}")
    if cfg.vocab_size < 256 + len(cfg.special_tokens):
        raise UserError(f"tokenizer.vocab_size {cfg.vocab_size} leaves no room for merges: "
                         f"256 byte tokens + {len(cfg.special_tokens)} special tokens are fixed")
    tok = new_tokenizer(cfg)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(cfg.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = [0, 0]  # documents, UTF-8 bytes: for the error when there was too little text
    tok.train_from_iterator(_counted(sample_texts(texts, cfg.sample_bytes), seen), trainer=trainer)
    got = tok.get_vocab_size()
    if got < cfg.vocab_size:  # before saving: a tokenizer smaller than asked is not a result
        from fmforge.errors import DegenerateResult

        fixed = 256 + len(cfg.special_tokens)
        raise DegenerateResult(
            f"the tokenizer learned {max(0, got - fixed):,} of the {cfg.vocab_size - fixed:,} merges asked "
            f"(vocabulary {got:,} of tokenizer.vocab_size={cfg.vocab_size:,}) from {seen[0]:,} documents, "
            f"{seen[1]:,} bytes of training text (validation documents are left out; pairs must occur "
            f"tokenizer.min_frequency={cfg.min_frequency} times): lower tokenizer.vocab_size (--vocab-size) or add data")
    save(tok, out_dir)
    return tok


def _counted(texts: Iterable[str], seen: list[int]) -> Iterator[str]:
    for t in texts:
        seen[0] += 1
        seen[1] += len(t.encode("utf-8", "surrogatepass"))
        yield t


def save(tok: Tokenizer, out_dir: Path) -> None:
    """tokenizer.json plus the small config files `transformers.AutoTokenizer` looks for."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".tokenizer.json.tmp"
    tok.save(str(tmp))
    os.replace(tmp, out_dir / "tokenizer.json")
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": None}
    if tok.token_to_id(PAD) is not None:
        special["pad_token"] = PAD
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000_000,
              "clean_up_tokenization_spaces": False, **special}
    atomic_write_text(out_dir / "tokenizer_config.json", json.dumps(config, indent=2))
    atomic_write_text(out_dir / "special_tokens_map.json", json.dumps({k: v for k, v in special.items() if v}, indent=2))


def tokenizer_file(path: Path) -> Path:
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.exists():
        raise InputNotFound(f"tokenizer not found: {file} (make one with `fmforge tokenizer train`)")
    return file


def read_tokenizer_json(path: Path) -> str:
    """The text of a tokenizer.json that HF tokenizers can load, or a UserError naming the file."""
    file = tokenizer_file(path)
    fix = "make it again with `fmforge tokenizer train`"
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{file} is not a tokenizer.json (not UTF-8 text at byte {e.start}); {fix}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{file} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}; "
                        f"cut short?); {fix}") from None
    try:
        Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises a bare Exception on a wrong structure
        raise UserError(f"{file} is not a tokenizer HF tokenizers can load ({' '.join(str(e).split())[:200]}); "
                        f"{fix}") from None
    return text


def load(path: Path) -> Tokenizer:
    return Tokenizer.from_str(read_tokenizer_json(path))
