"""Text primitives shared by every prepare stage: Unicode repair, one fast word
tokenisation, stable word hashes and word n-gram hashes.

Every filter, the MinHash signatures and the decontamination use the *same* word
split, computed once per document (``words``), so a document is tokenised once, not
once per filter. The split is a single compiled regex (words, or single punctuation
marks), which measured ~40x faster than spaCy's tokenizer (what datatrove's filters
use) and agrees with it on the Gopher rules' keep/drop decisions (see docs/LOG.md).
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np
import xxhash

# Words as spaCy's English tokenizer splits them (what datatrove's filters use), in one
# regex: abbreviations "U.S."/"e.g.", an ellipsis, words with inner . / , : ("3.5", "and/or"),
# digit ranges "1990-2000", a clitic "'s"/"'t" as its own token, or a single punctuation mark.
WORD_RE = re.compile(r"['’]?\w+(?:[./,:]\w+|[-–]\d\w*)*(?:(?<=\.\w)\.)?|\.\.\.|[^\w\s]")
# Mojibake (UTF-8 read as Latin-1/cp1252) leaves a lead byte such as Ã/Â/â followed by a
# continuation byte; only text showing that pattern pays for ftfy (about 5 MB/s).
MOJIBAKE_RE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u20ac\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u017d\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u017e\u0178]")
# C0/C1 control characters except tab and newline; they never carry meaning in text.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
TRAILING_SPACE_RE = re.compile(r"[ \t]+\n")
MANY_BLANK_LINES_RE = re.compile(r"\n{4,}")
# Word hashes feed n-gram hashes by polynomial combination (mod 2**64).
_MIX = np.uint64(0x9E3779B97F4A7C15)


def fix_text(text: str, form: str = "NFC", repair: bool = True) -> str:
    """Unicode repair (mojibake via ftfy, when installed), normalisation, control
    characters and whitespace clean-up. Idempotent."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if repair and not text.isascii() and MOJIBAKE_RE.search(text):
        text = _ftfy(text)
    if CONTROL_RE.search(text):
        text = CONTROL_RE.sub("", text)
    if form != "none" and not text.isascii():
        text = unicodedata.normalize(form, text)
    if " \n" in text or "\t\n" in text:
        text = TRAILING_SPACE_RE.sub("\n", text)
    if "\n\n\n\n" in text:
        text = MANY_BLANK_LINES_RE.sub("\n\n\n", text)
    return text.strip("\n") if text[:1] == "\n" or text[-1:] == "\n" else text


def _ftfy(text: str) -> str:
    try:
        import ftfy
    except ImportError:  # ftfy is a dependency; tolerate its absence in minimal installs
        return text
    # Only mojibake and HTML-entity style damage; NFC is done by us, and ftfy must not
    # touch quotes or dashes that the source typeset on purpose.
    return ftfy.fix_text(text, unescape_html=False, uncurl_quotes=False, fix_latin_ligatures=False,
                         fix_character_width=False, normalization=None, fix_line_breaks=False,
                         remove_control_chars=False)


def words(text: str) -> list[str]:
    return WORD_RE.findall(text)


def word_hashes(tokens: list[str], lower: bool = True) -> np.ndarray:
    """A stable 64-bit hash per token (the same in every process and on every machine).
    Hashes each distinct token once: real text repeats most of its words."""
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    ids: dict[str, int] = {}
    idx = np.fromiter((ids.setdefault(w, len(ids)) for w in tokens), dtype=np.int64, count=len(tokens))
    h = xxhash.xxh3_64_intdigest  # bytes, not str: older xxhash releases take only bytes
    vocab = np.fromiter((h((w.lower() if lower else w).encode("utf-8", "surrogatepass")) for w in ids), dtype=np.uint64, count=len(ids))
    return vocab[idx]


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """Hashes of every word n-gram (sliding window), by polynomial mixing of the word
    hashes; a document shorter than n words yields one hash of all its words."""
    m = len(wh)
    if m == 0:
        return np.zeros(0, dtype=np.uint64)
    k = min(n, m)
    out = wh[: m - k + 1].copy()
    with np.errstate(over="ignore"):
        for j in range(1, k):
            out *= _MIX
            out ^= wh[j : m - k + 1 + j]
        out ^= out >> np.uint64(29)  # final avalanche so low bits depend on every word
        out *= _MIX
    return out


def is_punct(tok: str) -> bool:
    """A token that is a punctuation mark or symbol, not a word."""
    return (len(tok) == 1 and not tok.isalnum() and tok != "_") or tok == "..."
