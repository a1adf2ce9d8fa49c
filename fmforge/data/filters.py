"""Quality filters: Gopher quality and repetition and the C4 line rules for prose,
StarCoder-style rules for code. Each is a pure function of one document's text (and
its precomputed words) that returns the reason it fails, or None to keep it.

Thresholds are the published defaults, set in the recipe (``data.gopher``, ...):
Gopher: Rae et al. 2021, "Scaling Language Models", appendix A.1.1 and table A1.
C4: Raffel et al. 2020, section 2.2. Code: the StarCoder/The Stack filters (Li et al. 2023).
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

from fmforge.data.text import _MIX

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
BULLETS = ("•", "-", "*", "‣", "◦", "–")
ELLIPSES = ("...", "…")
STOP_WORD_RES = {w: re.compile(rf"(?<![\w'’]){w}(?![\w'’])") for w in STOP_WORDS}
HAS_LETTER = re.compile(r"[^\W\d_]").search
HAS_ALNUM = re.compile(r"[^\W_]").search
PARAGRAPH_RE = re.compile(r"\n{2,}")
LINES_RE = re.compile(r"\n+")


def gopher_quality(text: str, toks: list[str], cfg, preset: str = "fineweb") -> str | None:
    """Word count, mean word length, symbol/word ratios, bullet and ellipsis lines,
    alphabetic words and stop words (the Gopher quality rules). `toks` are the shared
    tokens (fmforge.data.text.words): words, or runs of punctuation ("," "------"); the
    word count and mean length are over words, the ratios over all tokens."""
    n_tokens = len(toks) or 1
    word_lens = [len(t) for t in toks if t.isalnum() or HAS_ALNUM(t)]
    n = len(word_lens)
    if n < cfg.min_words:
        return "gopher_too_few_words"
    if n > cfg.max_words and preset == "fineweb":
        return "gopher_too_many_words"
    mean_len = sum(word_lens) / n
    if mean_len < cfg.min_mean_word_length:
        return "gopher_short_words"
    if mean_len > cfg.max_mean_word_length:
        return "gopher_long_words"
    if text.count("#") / n_tokens > cfg.max_symbol_word_ratio:
        return "gopher_hash_symbols"
    if (text.count("...") + text.count("…")) / n_tokens > cfg.max_symbol_word_ratio:
        return "gopher_ellipsis_symbols"
    lines = text.splitlines() or [""]
    if sum(ln.lstrip().startswith(BULLETS) for ln in lines) / len(lines) > cfg.max_bullet_lines:
        return "gopher_bullet_lines"
    if sum(ln.rstrip().endswith(ELLIPSES) for ln in lines) / len(lines) > cfg.max_ellipsis_lines:
        return "gopher_ellipsis_lines"
    # tokens with a letter: words that are not all digits/underscores
    alpha = sum(1 for t in toks if HAS_LETTER(t))
    if alpha / (n_tokens if preset == "fineweb" else max(1, n)) < cfg.min_alpha_words:
        return "gopher_few_alphabetic_words"
    if cfg.min_stop_words:
        low = text.lower()
        found = 0
        for w in STOP_WORDS:
            if w in low and STOP_WORD_RES[w].search(low):
                found += 1
                if found >= cfg.min_stop_words:
                    break
        if found < cfg.min_stop_words:
            return "gopher_few_stop_words"
    return None


def _dup_fraction(parts: list[str]) -> tuple[float, int]:
    """(fraction of parts that repeat an earlier part, characters in those repeats)."""
    seen: set[str] = set()
    dup = chars = 0
    for p in parts:
        if p in seen:
            dup += 1
            chars += len(p)
        else:
            seen.add(p)
    return dup / max(1, len(parts)), chars


def top_ngram_chars(toks: list[str], n: int) -> int:
    """FineWeb's reading of the top n-gram's characters: count x length of the most frequent
    n-gram written with spaces, words compared as written (case kept); ties go to the first."""
    grams = Counter(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    gram, count = grams.most_common(1)[0]
    return count * (sum(map(len, gram)) + n - 1)


def skip_scan_dup_chars(toks: list[str], n: int) -> int:
    """FineWeb's reading of the characters in repeated n-grams: reading left to right, an
    n-gram (case kept, words joined without spaces) met before adds its characters and the
    reading jumps past its last word; one not met before is remembered and the reading moves
    one word on. n-grams jumped over are never remembered, so this counts at most, and often
    less than, the default's union of all words inside later copies."""
    met: set[str] = set()
    chars = i = 0
    while i + n <= len(toks):
        gram = "".join(toks[i : i + n])
        if gram in met:
            chars, i = chars + len(gram), i + n
        else:
            met.add(gram)
            i += 1
    return chars


def gopher_repetition(text: str, toks: list[str], wh: np.ndarray, cfg, preset: str = "default") -> str | None:
    """Duplicate lines/paragraphs, the most frequent 2-4-gram, and characters inside
    repeated 5-10-grams (Gopher table A1). The n-gram rules compare word hashes that ignore
    case and count every word inside a later copy; `fineweb` confirms a document they would
    drop with datatrove's reading (case kept; repeated n-grams counted by a skipping scan,
    which finds fewer), in pure Python but only for those few documents."""
    size = len(text) or 1
    frac, chars = _dup_fraction(PARAGRAPH_RE.split(text.strip()))
    if frac > cfg.dup_para_frac:
        return "gopher_dup_paragraphs"
    if chars / size > cfg.dup_para_char_frac:
        return "gopher_dup_paragraph_chars"
    frac, chars = _dup_fraction(LINES_RE.split(text))
    if frac > cfg.dup_line_frac:
        return "gopher_dup_lines"
    if chars / size > cfg.dup_line_char_frac:
        return "gopher_dup_line_chars"
    if len(toks) < 2:
        return None
    lens = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
    m = len(toks)
    # Positions whose n-gram occurs more than once, refined from n to n+1: an (n+1)-gram can
    # only repeat where its n-gram does, so after the first sort only a few positions remain.
    h = wh.copy()
    pos = np.arange(m - 1)
    for n in range(2, 11):
        if m < n:
            break
        with np.errstate(over="ignore"):
            h = h[:-1] * _MIX ^ wh[n - 1 :]  # hashes of every n-gram, h[i] = words i .. i+n-1
        pos = pos[pos < m - n + 1]
        if len(pos) < 2:  # no n-gram repeats: only the top-n-gram rule on the first n-gram is left
            for k in range(n, 5):
                if m >= k and (int(lens[:k].sum()) + k - 1) / size > cfg.top_ngram_char_frac[k - 2]:
                    return f"gopher_top_{k}gram"
            break
        key = h[pos]
        order = np.argsort(key)
        ks = key[order]
        starts = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
        sizes = np.diff(np.append(starts, len(ks)))
        first = np.minimum.reduceat(pos[order], starts)  # first occurrence of each n-gram
        if n <= 4:
            limit = cfg.top_ngram_char_frac[n - 2]
            top = int(np.argmax(sizes))
            p = int(first[top]) if sizes[top] > 1 else 0  # all distinct: the first n-gram, as Counter ranks ties
            if sizes[top] * (int(lens[p : p + n].sum()) + n - 1) / size > limit:
                if preset != "fineweb" or top_ngram_chars(toks, n) / size > limit:
                    return f"gopher_top_{n}gram"
        else:
            limit = cfg.dup_ngram_char_frac[n - 5]
            in_dup = np.repeat(sizes >= 2, sizes)
            starts_rep = np.zeros(m - n + 2, dtype=np.int64)
            rep = pos[order][in_dup]
            rep = rep[rep != np.repeat(first, sizes)[in_dup]]  # later occurrences only
            starts_rep[rep + 1] = 1
            csum = np.cumsum(starts_rep)  # csum[k] = repeated starts before position k
            j = np.arange(m)
            hi = np.minimum(j + 1, m - n + 1)
            lo = np.clip(j - n + 1, 0, m - n + 1)
            covered = (csum[hi] - csum[lo]) > 0  # word j lies inside some repeated n-gram
            if covered.any() and int(lens[covered].sum()) / size > limit:
                if preset != "fineweb" or skip_scan_dup_chars(toks, n) / size > limit:
                    return f"gopher_dup_{n}gram_chars"
        keep = np.repeat(sizes >= 2, sizes)
        pos = np.sort(pos[order][keep])
    return None


C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
C4_END = (".", "!", "?", '"', "'", "”", "’", "…")
CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")


def _utf8(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def _prose_line(s: str, cfg) -> bool:
    return len(s.split()) >= cfg.min_words_per_line and s.endswith(C4_END)


def c4_lines(text: str, cfg, removed: dict | None = None, preset: str = "fineweb",
             measured: dict | None = None) -> tuple[str, str | None]:
    """C4's rules: drop lines without terminal punctuation, short lines, lines about
    javascript or cookie policies; drop documents with lorem ipsum or curly braces or too
    few sentences. Returns the cleaned text and the reason to drop it (or None).

    `removed`, if given, receives what the line rules took out of the text:
    {rule: [lines, UTF-8 bytes (with the newline), first line removed]} for the rules
    c4_line_*, c4_citations (bytes) and c4_whitespace (stripped from kept lines and the ends).
    `measured`, if given, receives the sentence count (and the lowercase-start share).

    The default preset adds one rule: shuffled or broken text whose sentence ends are mostly
    followed by a lowercase word (real prose starts a sentence with a capital, a digit or
    a quote) is dropped as c4_lowercase_sentence_starts."""
    def drop(rule: str, line: str) -> None:
        if removed is not None:
            r = removed.setdefault(rule, [0, 0, line])
            r[0] += 1
            r[1] += _utf8(line) + 1

    kept, sentences = [], 0
    all_lines = text.split("\n")
    curly_doc = cfg.curly_bracket and preset == "fineweb"  # fineweb: one "{" drops the page
    if cfg.curly_bracket and preset == "default" and curly_line_share(all_lines) > cfg.max_curly_lines:
        return text, "c4_curly_bracket"
    for i, line in enumerate(all_lines):
        s = line.strip()
        if not s:
            kept.append(line)
            continue
        if any(len(w) > cfg.max_word_length for w in s.split()):
            drop("c4_line_long_word", line)
            continue
        if cfg.remove_citations:
            cut = CITATION_RE.sub("", s)
            if removed is not None and cut != s:
                r = removed.setdefault("c4_citations", [0, 0, s])
                r[0] += 1
                r[1] += _utf8(s) - _utf8(cut)
            s = cut
        if cfg.terminal_punct and not s.endswith(C4_END):
            drop("c4_line_no_terminal_punct", line)
            continue
        if len(s.split()) < cfg.min_words_per_line:
            if preset == "default" and _heading_kept(s, all_lines, i, cfg):
                kept.append(s if cfg.remove_citations else line)
                continue
            drop("c4_line_few_words", line)
            continue
        ls = s.lower()
        # like C4's own code: lorem ipsum and "{" drop the page only on a line that was kept so far
        if cfg.lorem_ipsum and "lorem ipsum" in ls:
            return text, "c4_lorem_ipsum"
        if cfg.javascript and "javascript" in ls:
            drop("c4_line_javascript", line)
            continue
        if curly_doc and "{" in s:
            return text, "c4_curly_bracket"
        if cfg.policy and any(p in ls for p in C4_POLICY):
            drop("c4_line_policy", line)
            continue
        # default: a line is a sentence only when it ends like one (terminal_punct is off, so
        # otherwise every menu item and button that survives counts as a sentence)
        ends = s.count(". ") + s.count("? ") + s.count("! ")
        sentences += ends + (1 if preset == "fineweb" or s.endswith(C4_END) else 0)
        kept.append(s if cfg.remove_citations else line)
    out = "\n".join(kept).strip()
    if measured is not None:
        measured["sentences"] = sentences
    if not out:
        return text, "c4_no_lines_left"
    if sentences < cfg.min_sentences:
        return text, "c4_too_few_sentences"
    if preset == "default" and cfg.max_lowercase_starts < 1:
        share, n = lowercase_starts(out)
        if measured is not None:
            measured["lowercase_starts"] = share
        if n >= LOWERCASE_MIN_SENTENCES and share > cfg.max_lowercase_starts:
            return text, "c4_lowercase_sentence_starts"
    if removed is not None:  # the rest of the difference: whitespace stripped (an exact account)
        rest = _utf8(text) - _utf8(out) - sum(r[1] for r in removed.values())
        if rest:
            removed["c4_whitespace"] = [0, rest, ""]
    return out, None


SENTENCE_START_RE = re.compile(r"[.!?][\"'”’)\]]*\s+[(\"'“‘]*(\w)")
LOWERCASE_MIN_SENTENCES = 10  # fewer sentence ends than this: too few to judge


def lowercase_starts(text: str) -> tuple[float, int]:
    """(share of sentence ends followed by a lowercase letter, number of sentence ends)."""
    starts = SENTENCE_START_RE.findall(text)
    return sum(c.islower() for c in starts) / max(1, len(starts)), len(starts)


def curly_line_share(lines: list[str]) -> float:
    """Share of non-empty lines with a "{": C4 meant to remove code and script pages, which are
    full of them, not prose or documentation quoting a line of code or a template."""
    nonempty = [ln for ln in lines if ln.strip()]
    return sum("{" in ln for ln in nonempty) / max(1, len(nonempty))


def repetition_tokens(toks: list[str], wh: np.ndarray, preset: str) -> tuple[list[str], np.ndarray]:
    """The tokens the n-gram repetition rules count: every token (fineweb, as datatrove), or
    words only (default: Gopher's n-grams are of words; runs of punctuation such as rst
    underlines, table rules and spaced-out commas are not repeated prose)."""
    if preset == "fineweb":
        return toks, wh
    keep = [i for i, t in enumerate(toks) if t.isalnum() or HAS_ALNUM(t)]
    if len(keep) == len(toks):
        return toks, wh
    return [toks[i] for i in keep], wh[np.asarray(keep, dtype=np.int64)]


def _heading_kept(s: str, lines: list[str], i: int, cfg) -> bool:
    """A short line is a heading or a speaker's name ("First Citizen:") when the next
    non-empty line is prose and the previous one is not another short line (menus and
    buttons come in runs of short lines; C4 meant to drop those, not headings)."""
    if len(s) > 80 or "{" in s:
        return False
    prev = next((p.strip() for p in reversed(lines[max(0, i - 3) : i]) if p.strip()), None)
    if prev is not None and len(prev.split()) < cfg.min_words_per_line and not prev.endswith(":"):
        return False
    nxt = next((t.strip() for t in lines[i + 1 : i + 4] if t.strip()), None)
    return nxt is not None and _prose_line(nxt, cfg)


AUTOGEN_RE = re.compile(r"auto-?generated|automatically generated|generated automatically|(?:file|code) (?:is |was )?generated by|do not edit", re.I)
_NON_ALNUM_RE = re.compile(r"[\W_]+")


def code_quality(text: str, cfg) -> str | None:
    """Line length (max, mean), alphanumeric fraction and auto-generated markers."""
    lines = text.split("\n")
    longest = max(map(len, lines))
    if longest > cfg.max_line_length:
        return "code_long_line"
    if len(text) / len(lines) > cfg.max_mean_line_length:
        return "code_long_mean_line"
    alnum = len(text) - sum(map(len, _NON_ALNUM_RE.findall(text)))
    if alnum / max(1, len(text)) < cfg.min_alnum_fraction:
        return "code_low_alphanumeric"
    if cfg.autogen_lines and AUTOGEN_RE.search("\n".join(lines[: cfg.autogen_lines])):
        return "code_autogenerated"
    return None

