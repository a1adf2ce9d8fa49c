"""Text primitives shared by every prepare stage: Unicode repair, one fast word
tokenisation, stable word hashes and word n-gram hashes.

Every filter, the MinHash signatures and the decontamination use the *same* word
split, computed once per document (``words``), so a document is tokenised once, not
once per filter. The split is a single compiled regex that splits like spaCy's English
tokenizer (what datatrove's filters use), without spaCy at run time (see docs/LOG.md).
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np
import xxhash

# Words as spaCy's English tokenizer splits them (what datatrove's Gopher/C4 filters count),
# re-implemented as one regex over whitespace-separated chunks: punctuation, quotes, currency
# and symbols split off a chunk's start (prefixes) and end (suffixes: also "'s", "n't", a unit
# after a number "5km", a "." unless it ends an abbreviation "J."/"e.g."/"Mr."), and a chunk
# splits inside only at infixes (a-b and a/b a:b a=b between letters, 3-4 between digits, a,b,
# lower.Upper, ellipses, symbols). Anything else stays one token: "------", "--allow",
# "pep:`602", "1990–2000", "x=1", URLs, "अग्नि". Plain words take the first (fast) branch.
_QUOTES = "'\"”“`‘´’‚„»«「」『』（）〔〕【】《》〈〉⟦⟧"
_PUNCT = ",:;!?¿¡()\\[\\]{}<>_#*&。？！，、；：～·।،۔؛٪…"
_CURRENCY = "$£€¥฿₠-₿﷼"
# symbols split off like punctuation: ° © ® ¦, arrows, technical, box drawing, dingbats, emoji
_ICONS = "¦©®°\u2100-\u214f\u2190-\u21ff\u2300-\u23ff\u2400-\u24ff\u2500-\u27bf\u2800-\u28ff\u2b00-\u2bff\U0001f000-\U0001faff"
_PRE = f"§%=—–{_PUNCT}{_QUOTES}{_CURRENCY}{_ICONS}"      # split from a word's start
_SUF = f"—–{_PUNCT}{_QUOTES}{_ICONS}"                     # split from a word's end
_LOWER = "a-zß-öø-ÿ"
_UPPER = "A-ZÀ-ÖØ-Þ"
_A = r"[^\W\d_]"
_UNITS = "km²|km³|km|m²|m³|m|dm²|dm³|dm|cm²|cm³|cm|mm²|mm³|mm|ha|µm|nm|yd|in|ft|kg|g|mg|µg|t|lb|oz|m/s|km/h|kmh|mph|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%"
# one suffix piece at the end of a word
_SUF1 = (rf"['’][sS]|(?<={_A})n['’]t|\.\.+|[{_SUF}]"
         rf"|(?<=[0-9{_LOWER}%²+\-{_PUNCT}{_QUOTES}])\.|(?<=[{_UPPER}][{_UPPER}])\."
         rf"|(?<=°[FfCcKk])\.|(?<={_A})['’](?:[mdMD]|re|ve|ll)|(?<=\d)(?:\+|[{_CURRENCY}]|{_UNITS})")
_SUFZ = rf"(?:{_SUF1})+(?!\S)"
# where a word splits inside: ellipses, symbols, digit-op-digit, lower.Upper, a,b, a-b, a/b a:b a=b
_INFIX = (rf"\.\.+|…|[{_ICONS}]|(?<=\d)[-+*^](?=[\d-])|(?<=[{_LOWER}{_QUOTES}])\.(?=[{_UPPER}{_QUOTES}])"
          rf"|(?<={_A}),(?={_A})|(?<=[^\W_])(?:-|–|—|~)+(?={_A})|(?<=[^\W_])[:<>=/](?={_A})")
# abbreviations that keep their "." (spaCy English exceptions of this kind), besides "J." "e.g." "p."
_ABBREVS = "Mr Mrs Ms Dr St Jr Sr Inc Ltd Co Corp Bros vs Mt Gen Gov Sen Rep Rev Prof Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec".split()
_ABBR = rf"(?:and/or|(?:[A-Za-z]\.){{2,}}|[a-z]\.|(?:{'|'.join(_ABBREVS)})\.)(?!\.)"
_URL = r"(?:[a-zA-Z][a-zA-Z0-9+.\-]*://|www\.)\S+?|[a-z0-9][a-z0-9\-]*(?:\.[a-z0-9\-]+)*\.[a-z]{2,}(?:/\S*?)?"
_NOT_ABBR = "".join(f"(?<!{a})" for a in _ABBREVS)
WORD_RE = re.compile(
    r"(?=\S)(?:"
    rf"(?:[^\W\d_]++|\d++)(?=[,;:!?)\]\"”’']*(?!\S))|"     # fast path: a plain word or number, then space
    rf"(?:\d++|[^\W\d_]++(?:(?<=[{_LOWER}])|(?<=[{_UPPER}][{_UPPER}]))(?<!(?<![^\s{_PRE}])[a-z]){_NOT_ABBR})(?=\.[,;:!?)\]\"”’']*(?!\S))|"  # a word, then its sentence-final "."
    rf"[,;:!?()\[\]{{}}\"“”«»<>*&#_]|"                          # punctuation that is its own token
    rf"(?<![^\s{_PRE}])['’](?:[sSmdMD]|re|ve|ll)(?={_SUFZ}|(?!\S))|"  # a clitic alone (WikiText's " 's"): one token, as spaCy's exceptions
    rf"(?<![^\s{_PRE}])(?:\.\.++|[{_PRE}]|\+(?!\d))(?=\S)"        # prefix piece
    rf"|(?<![^\s{_PRE}])(?=[\w/:\-+]*\.|and/or)(?:{_URL}|{_ABBR})(?={_SUFZ}|(?!\S))"    # a URL / an abbreviation, whole
    rf"|['’](?:[sSmdMD]|re|ve|ll)(?![^\W_])|n['’]t(?![^\W_])"
    rf"|(?:\d++|(?<!\d)[^\W\d_n]++|(?!{_SUFZ}|{_INFIX})\S)+"                              # the word itself
    rf"|{_SUF1}|(?:-|–|—|~)+|\S)")                                 # suffix/infix pieces
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


_ALNUM = re.compile(r"[^\W_]").search


def is_punct(tok: str) -> bool:
    """A token of punctuation marks or symbols only ("," "------" "''"), not a word."""
    return not _ALNUM(tok)
