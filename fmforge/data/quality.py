"""What each filter rule measured, and a per-document quality score from the margins.

`measure(reason, ...)` recomputes the value a rule compared with its threshold, for the
data card (only for removed documents: the rules themselves stop at the first failure).
`score(...)` is the smallest relative margin over a document's rules: (value - threshold)
/ threshold for a lower bound, (threshold - value) / threshold for an upper bound, clipped
to [-1, 1]. A kept document scores >= 0; 0.05 means it passed some rule by 5%. It is
stored in each kept document's `meta.quality` so that users can filter harder later.
"""
from __future__ import annotations

from collections import Counter

from fmforge.data import filters
from fmforge.data.filters import (BULLETS, ELLIPSES, HAS_ALNUM, HAS_LETTER, LINES_RE, PARAGRAPH_RE, STOP_WORD_RES,
                                  STOP_WORDS, _NON_ALNUM_RE, _dup_fraction, curly_line_share)

GE, LE = ">=", "<="  # the rule keeps a document when value GE threshold / value LE threshold


def gopher_measures(text: str, toks: list[str], g, preset: str = "default") -> dict:
    """{reason: (value, threshold, GE|LE)} for every Gopher quality rule."""
    n_tokens = len(toks) or 1
    word_lens = [len(t) for t in toks if t.isalnum() or HAS_ALNUM(t)]
    n = len(word_lens)
    mean_len = sum(word_lens) / max(1, n)
    lines = text.splitlines() or [""]
    low = text.lower()
    alpha = sum(1 for t in toks if HAS_LETTER(t))
    m = {"gopher_too_few_words": (n, g.min_words, GE)}
    if preset == "fineweb":
        m["gopher_too_many_words"] = (n, g.max_words, LE)
    m.update({
        "gopher_short_words": (mean_len, g.min_mean_word_length, GE),
        "gopher_long_words": (mean_len, g.max_mean_word_length, LE),
        "gopher_hash_symbols": (text.count("#") / n_tokens, g.max_symbol_word_ratio, LE),
        "gopher_ellipsis_symbols": ((text.count("...") + text.count("…")) / n_tokens, g.max_symbol_word_ratio, LE),
        "gopher_bullet_lines": (sum(ln.lstrip().startswith(BULLETS) for ln in lines) / len(lines), g.max_bullet_lines, LE),
        "gopher_ellipsis_lines": (sum(ln.rstrip().endswith(ELLIPSES) for ln in lines) / len(lines), g.max_ellipsis_lines, LE),
        "gopher_few_alphabetic_words": (alpha / (n_tokens if preset == "fineweb" else max(1, n)), g.min_alpha_words, GE),
    })
    if g.min_stop_words:
        m["gopher_few_stop_words"] = (sum(1 for w in STOP_WORDS if w in low and STOP_WORD_RES[w].search(low)),
                                      g.min_stop_words, GE)
    return m


def repetition_measures(text: str, r) -> dict:
    """{reason: (value, threshold, LE)} for the line and paragraph duplication rules."""
    size = len(text) or 1
    pf, pc = _dup_fraction(PARAGRAPH_RE.split(text.strip()))
    lf, lc = _dup_fraction(LINES_RE.split(text))
    return {"gopher_dup_paragraphs": (pf, r.dup_para_frac, LE), "gopher_dup_paragraph_chars": (pc / size, r.dup_para_char_frac, LE),
            "gopher_dup_lines": (lf, r.dup_line_frac, LE), "gopher_dup_line_chars": (lc / size, r.dup_line_char_frac, LE)}


def ngram_measure(reason: str, text: str, toks: list[str], r, preset: str = "default") -> tuple | None:
    """The n-gram repetition values (slow: pure Python, only for a removed document);
    `fineweb` measures as it decides, with datatrove's reading (filters.gopher_repetition)."""
    size = len(text) or 1
    if preset == "fineweb" and toks:
        if reason.startswith("gopher_top_"):
            n = int(reason[len("gopher_top_")][0])
            return (filters.top_ngram_chars(toks, n) / size, r.top_ngram_char_frac[n - 2], LE) if len(toks) >= n else None
        if reason.startswith("gopher_dup_") and reason.endswith("gram_chars"):
            n = int(reason[len("gopher_dup_") : -len("gram_chars")])
            return filters.skip_scan_dup_chars(toks, n) / size, r.dup_ngram_char_frac[n - 5], LE
    low = [t.lower() for t in toks]  # the rules hash words case-insensitively
    if reason.startswith("gopher_top_"):
        n = int(reason[len("gopher_top_")][0])
        grams = Counter(tuple(low[i : i + n]) for i in range(len(low) - n + 1))
        if not grams:
            return None
        gram, count = grams.most_common(1)[0]
        return count * (sum(map(len, gram)) + n - 1) / size, r.top_ngram_char_frac[n - 2], LE
    if reason.startswith("gopher_dup_") and reason.endswith("gram_chars"):
        n = int(reason[len("gopher_dup_") : -len("gram_chars")])
        seen, covered = set(), [False] * len(low)
        for i in range(len(low) - n + 1):
            g = tuple(low[i : i + n])
            if g in seen:
                covered[i : i + n] = [True] * n
            else:
                seen.add(g)
        return sum(len(t) for t, c in zip(toks, covered) if c) / size, r.dup_ngram_char_frac[n - 5], LE
    return None


def code_measures(text: str, c) -> dict:
    lines = text.split("\n")
    alnum = len(text) - sum(map(len, _NON_ALNUM_RE.findall(text)))
    return {"code_long_line": (max(map(len, lines)), c.max_line_length, LE),
            "code_long_mean_line": (len(text) / len(lines), c.max_mean_line_length, LE),
            "code_low_alphanumeric": (alnum / max(1, len(text)), c.min_alnum_fraction, GE)}


def c4_measure(reason: str, text: str, cfg, preset: str) -> tuple | None:
    """The C4 document rules' values, from c4_lines itself on the same text."""
    from fmforge.data.filters import c4_lines

    got: dict = {}
    c4_lines(text, cfg.c4, None, preset, got)
    if reason == "c4_too_few_sentences":
        return got.get("sentences", 0), cfg.c4.min_sentences, GE
    if reason == "c4_lowercase_sentence_starts" and "lowercase_starts" in got:
        return got["lowercase_starts"], cfg.c4.max_lowercase_starts, LE
    return None


def measure(reason: str, text: str, toks: list[str], cfg, preset: str = "default") -> tuple | None:
    """(value, threshold, GE|LE) of the rule behind `reason` (cfg: the data section), or None
    for a rule without a numeric threshold (lorem ipsum, curly bracket, ...)."""
    if reason.startswith("gopher_top_") or reason.endswith("gram_chars"):
        if preset != "fineweb":
            toks = [t for t in toks if t.isalnum() or HAS_ALNUM(t)]
        return ngram_measure(reason, text, toks, cfg.repetition, preset)
    if reason.startswith("gopher_dup_"):
        return repetition_measures(text, cfg.repetition).get(reason)
    if reason.startswith("gopher_"):
        return gopher_measures(text, toks, cfg.gopher, preset).get(reason)
    if reason.startswith("code_"):
        return code_measures(text, cfg.code).get(reason)
    if reason in ("c4_too_few_sentences", "c4_lowercase_sentence_starts"):
        return c4_measure(reason, text, cfg, preset)
    if reason == "c4_curly_bracket" and preset != "fineweb":
        return curly_line_share(text.split("\n")), cfg.c4.max_curly_lines, LE
    return None


LABELS = {"gopher_too_few_words": "words", "gopher_too_many_words": "words", "gopher_short_words": "mean word length",
          "gopher_long_words": "mean word length", "gopher_hash_symbols": "'#' per token",
          "gopher_ellipsis_symbols": "ellipses per token", "gopher_bullet_lines": "bullet lines",
          "gopher_ellipsis_lines": "ellipsis lines", "gopher_few_alphabetic_words": "alphabetic words",
          "gopher_few_stop_words": "stop words", "gopher_dup_paragraphs": "duplicate paragraphs",
          "gopher_dup_paragraph_chars": "characters in duplicate paragraphs", "gopher_dup_lines": "duplicate lines",
          "gopher_dup_line_chars": "characters in duplicate lines", "c4_too_few_sentences": "sentences", "c4_lowercase_sentence_starts": "sentence ends before a lowercase word",
          "code_long_line": "longest line", "c4_curly_bracket": "lines with '{'", "code_long_mean_line": "mean line length",
          "code_low_alphanumeric": "alphanumeric fraction"}


def label(reason: str) -> str:
    if reason.startswith("gopher_top_"):
        return f"characters in the top {reason[len('gopher_top_'):]}"
    if reason.endswith("gram_chars"):
        return f"characters in repeated {reason[len('gopher_dup_'):-len('_chars')]}s"
    return LABELS.get(reason, reason)


def fmt(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3f}" if abs(value) < 0.1 else f"{value:.2f}"


def detail(reason: str, measured: tuple | None) -> str:
    """"alphabetic words 0.71 < 0.8 (data.gopher.min_alpha_words)": the card's example line."""
    from fmforge.data.reasons import field_of

    if measured is None:
        return f"({field_of(reason)})"
    v, t, op = measured
    return f"{label(reason)} {fmt(v)} {'<' if op == GE else '>'} {t} ({field_of(reason)})"


def margin(value: float, threshold: float, op: str) -> float:
    t = abs(threshold) or 1.0
    m = (value - threshold) / t if op == GE else (threshold - value) / t
    return max(-1.0, min(1.0, m))


def score(text: str, toks: list[str], cfg, kind: str = "prose", preset: str = "default") -> float:
    """The smallest relative margin over the document's rules (see the module docstring):
    Gopher quality and line/paragraph repetition for prose, the code rules for code."""
    if kind == "code":
        ms = code_measures(text, cfg.code) if cfg.code.enabled else {}
    else:
        ms = {}
        if cfg.gopher.enabled:
            ms.update(gopher_measures(text, toks, cfg.gopher, preset))
        if cfg.repetition.enabled:
            ms.update(repetition_measures(text, cfg.repetition))
    if not ms:
        return 1.0
    return round(min(margin(v, t, op) for v, t, op in ms.values()), 4)
