"""The per-document stages of prepare, in order, as one pure function over a batch:

clean -> length -> language (prose) -> gopher_quality, gopher_repetition, c4 (prose)
| code (code) -> pii -> decontaminate -> signatures for the global de-duplication.

A document is prose or code by the language its reader recorded (``meta.language``,
from the file extension): code gets the code rules, prose the language id and the prose
rules, so a Python file is never judged by rules written for web pages.
Every document leaves a batch either kept or counted under a reason.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xxhash

from fmforge.data import filters, langid, pii, quality
from fmforge.data.binary import binary_reason
from fmforge.data.decontam import contaminated
from fmforge.data.minhash import permutations, signature
from fmforge.data.stats import PrepareStats, length_bucket, utf8_len
from fmforge.data.text import fix_text, word_hashes, words


@dataclass
class Kept:
    doc: dict  # id, text, source, meta (meta updated with lang and kind)
    lang: str
    exact: int  # hash of the whitespace-normalised text
    sig: np.ndarray  # MinHash signature (uint32) or empty


class Stages:
    def __init__(self, cfg, eval_index: np.ndarray | None = None, strict: bool = False):
        self.cfg, self.strict = cfg, strict
        self.eval_index = eval_index if eval_index is not None else np.zeros(0, dtype=np.uint64)
        nd = cfg.near_dedup
        self.perms = permutations(nd.num_perm, nd.seed) if nd.enabled else None
        self.code_langs = set(cfg.code_languages)

    def run(self, docs: list[dict]) -> tuple[list[Kept], PrepareStats]:
        stats = PrepareStats()
        kept = []
        for doc in docs:
            try:
                k = self._one(doc, stats)
            except Exception as e:  # a filter bug must not lose the batch; it is a counted reason
                if self.strict:
                    raise
                stats.drop("processing_error", doc, doc.get("text") or "", f"{type(e).__name__}: {e}")
                k = None
            if k is not None:
                kept.append(k)
        return kept, stats

    def _one(self, doc: dict, st: PrepareStats) -> Kept | None:
        cfg = self.cfg
        raw = doc.get("text") or ""
        n_in = utf8_len(raw)
        st.docs_in += 1
        st.bytes_in += n_in
        st.lengths_in[length_bucket(n_in)] += 1
        meta = _meta(doc)
        kind = "code" if meta.get("language") in self.code_langs else "prose"
        st.kinds[kind] += 1

        def step(name, text_before, text_after, reason, detail="", toks=None):
            """Account one stage; returns False when the document stops here. With `toks`
            (a filter stage), the rule's measured value goes to the card beside its threshold."""
            b_in = utf8_len(text_before)
            if reason:
                st.stage(name, 1, b_in, 0, 0, b_in)
                measured = quality.measure(reason, text_before, toks, cfg, cfg.filters) if toks is not None else None
                if toks is not None:
                    detail = quality.detail(reason, measured)
                st.drop(reason, doc, text_before, detail, measured)
                return False
            st.stage(name, 1, b_in, 1, b_in if text_after is text_before else utf8_len(text_after))
            return True

        why, detail = binary_reason(raw, cfg.binary_max_control_frac, cfg.binary_max_replacement_frac)
        if not step("binary", raw, raw, why, detail):  # on the raw text: clean would hide control characters
            return None
        text = fix_text(raw, cfg.normalize, cfg.repair_unicode)
        if not step("clean", raw, text, None if text.strip() else "empty"):
            return None
        n = len(text)
        if not step("length", text, text, "too_short" if n < cfg.min_chars else "too_long" if n > cfg.max_chars else None,
                    f"{n} chars < {cfg.min_chars} (data.min_chars)" if n < cfg.min_chars
                    else f"{n} chars > {cfg.max_chars} (data.max_chars)"):
            return None

        toks = words(text)
        judged = text
        wh = None
        lang = meta.get("language", "unknown") if kind == "code" else None
        if kind == "prose":
            if cfg.languages:
                lang, score = langid.detect(text, cfg.langid_backend)
                bad = lang not in cfg.languages or score < cfg.langid_min_score
                st.languages_in[lang] += 1
                if not step("language", text, text, "language" if bad else None, f"{lang} p={score:.2f}; kept: {', '.join(cfg.languages)} with p ≥ {cfg.langid_min_score} "
                                                                      "(data.languages, data.langid_min_score)"):
                    return None
            else:
                lang = meta.get("lang") or "unknown"
                st.languages_in[lang] += 1
            if cfg.gopher.enabled:
                why = filters.gopher_quality(text, toks, cfg.gopher, cfg.filters)
                if not step("gopher_quality", text, text, why, toks=toks):
                    return None
            if cfg.repetition.enabled:
                wh = word_hashes(toks)
                why = filters.gopher_repetition(text, *filters.repetition_tokens(toks, wh, cfg.filters), cfg.repetition,
                                                 cfg.filters)
                if not step("gopher_repetition", text, text, why, toks=toks):
                    return None
            if cfg.c4.enabled:
                lines: dict = {}
                new, reason = filters.c4_lines(text, cfg.c4, lines, cfg.filters)
                if not step("c4", text, new, reason, toks=toks):
                    return None
                st.lines(lines, doc)
                text = new  # signatures keep the words before line removal: tokenising twice costs 15%
        else:
            st.languages_in[lang] += 1
            if cfg.code.enabled:
                why = filters.code_quality(text, cfg.code)
                if not step("code", text, text, why, toks=toks):
                    return None

        if cfg.pii:
            new, counts = pii.redact(text, cfg.pii)
            before = text
            if counts:
                st.pii.update(counts)
                st.pii_docs += 1
                placeholders = sum(n * len(pii.PLACEHOLDERS[k]) for k, n in counts.items())
                st.pii_bytes_in += utf8_len(text) - utf8_len(new) + placeholders  # the matched text
                st.pii_bytes_out += placeholders
                text = new
            step("pii", before, text, None)

        if wh is None:  # (words of the text before C4 line removal and PII placeholders)
            wh = word_hashes(toks)
        if len(self.eval_index):
            hits = contaminated(wh, self.eval_index, cfg.decontam_ngram, toks)
            if hits:
                st.contaminated_docs += 1
            drop = hits and cfg.decontam_action == "drop"
            if not step("decontaminate", text, text, "contaminated" if drop else None, f"{hits} shared {cfg.decontam_ngram}-grams"):
                return None

        meta["lang"] = lang
        meta["kind"] = kind
        # the smallest margin over the rules, on the text they judged (before line removal)
        meta["quality"] = quality.score(judged, toks, cfg, kind, cfg.filters)
        out = {"id": doc["id"], "text": text, "source": doc.get("source", ""), "meta": json.dumps(meta, ensure_ascii=False)}
        exact = xxhash.xxh3_64_intdigest(" ".join(text.split()).encode("utf-8", "surrogatepass"))
        sig = signature(wh, cfg.near_dedup.ngram, self.perms) if self.perms is not None else np.zeros(0, np.uint32)
        return Kept(out, lang, exact, sig)


def _meta(doc: dict) -> dict:
    try:
        m = json.loads(doc.get("meta") or "{}")
        return m if isinstance(m, dict) else {"meta": m}
    except (json.JSONDecodeError, TypeError):
        return {}
