"""Keep/drop agreement with datatrove, rule by rule, on text the word split was not tuned on.

benchmarks/data_pipeline.py compares the whole pipelines (speed, and one agreement figure
for the chained filters) on the shared pretrain files, the corpus fmforge's word split was
tuned on. This one runs every rule on its own, on both sides, on held-out corpora
(benchmarks/heldout.py: WikiText-2 articles, installed packages' READMEs; PEPs, from the
tuning corpus, as a reference), for both of fmforge's presets (``data.filters: fineweb``,
made to take datatrove's decisions, and ``default``, which departs from them on purpose):

  - each Gopher quality rule alone (the others switched off on both sides: datatrove's
    argument None, fmforge's threshold made permissive; the rule itself at datatrove's
    threshold for `fineweb`, at the preset's own for `default`), and the whole filter;
  - each Gopher repetition rule alone, and the whole filter;
  - C4 (FineWeb's setting: no terminal-punctuation rule): the whole filter, the two
    document rules (lorem ipsum, curly bracket) and the sentence count after the line
    rules, alone; and for documents both keep, whether the cleaned text is the same
    (blank lines aside: datatrove drops them, fmforge keeps paragraph breaks);
  - the chain Gopher repetition + quality + C4 (FineWeb's order);
  - datatrove's FineWebQualityFilter, which fmforge has no rule for: its drop rate only.

Both sides get the same text, after fmforge's clean step (fix_text), so only the rules
differ. A rule's agreement is the share of documents on which both keep or both drop.

    python benchmarks/filter_agreement.py [--sources wikitext,readmes,peps] [--workers 16]

Needs datatrove and spaCy (the bench extra). Writes benchmarks/results/filter_agreement-<date>.json.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import heldout  # noqa: E402
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

BIG = 1e12
# (rule, datatrove argument and value, fmforge field and value); thresholds are the published ones
GOPHER_QUALITY = [
    ("min_words", "min_doc_words", 50, "min_words", 50),
    ("max_words", "max_doc_words", 100_000, "max_words", 100_000),
    ("min_mean_word_length", "min_avg_word_length", 3, "min_mean_word_length", 3),
    ("max_mean_word_length", "max_avg_word_length", 10, "max_mean_word_length", 10),
    ("symbol_word_ratio", "max_symbol_word_ratio", 0.1, "max_symbol_word_ratio", 0.1),
    ("bullet_lines", "max_bullet_lines_ratio", 0.9, "max_bullet_lines", 0.9),
    ("ellipsis_lines", "max_ellipsis_lines_ratio", 0.3, "max_ellipsis_lines", 0.3),
    ("alphabetic_words", "max_non_alpha_words_ratio", 0.8, "min_alpha_words", 0.8),
    ("stop_words", "min_stop_words", 2, "min_stop_words", 2),
]
GQ_FM_OFF = {"min_words": 0, "max_words": 10**12, "min_mean_word_length": 0, "max_mean_word_length": BIG,
             "max_symbol_word_ratio": BIG, "max_bullet_lines": 1.0, "max_ellipsis_lines": 1.0, "min_alpha_words": 0.0,
             "min_stop_words": 0}
REP_LINES = [("dup_para_frac", 0.3), ("dup_para_char_frac", 0.2), ("dup_line_frac", 0.3), ("dup_line_char_frac", 0.2)]
TOP = [(2, 0.2), (3, 0.18), (4, 0.16)]
DUP = [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]
DT_C4 = {"filter_no_terminal_punct": False}  # FineWeb's setting (fmforge's default too)
C4_DROP_DOC = {"c4_lorem_ipsum": ("lorem_ipsum", "c4_lorem_ipsum"), "c4_curly_bracket": ("curly_bracket", "c4_curly_bracket")}


def _rules():
    """{rule: (family, datatrove filter factory, fmforge config overrides)} built in each worker."""
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

    gq_off = {dt: None for _, dt, _, _, _ in GOPHER_QUALITY}
    rules = {f"gopher_quality.{r}": ("gopher_quality", GopherQualityFilter(**{**gq_off, dt: v}), {**GQ_FM_OFF, fm: w})
             for r, dt, v, fm, w in GOPHER_QUALITY}
    rules["gopher_quality"] = ("gopher_quality", GopherQualityFilter(), {})
    rep_off = {k: None for k, _ in REP_LINES} | {"top_n_grams": (), "dup_n_grams": ()}
    fm_off = {k: BIG for k, _ in REP_LINES} | {"top_ngram_char_frac": [BIG] * 3, "dup_ngram_char_frac": [BIG] * 6}
    for k, v in REP_LINES:
        rules[f"gopher_repetition.{k}"] = ("gopher_repetition", GopherRepetitionFilter(**{**rep_off, k: v}), {**fm_off, k: v})
    for n, v in TOP:
        fm = [BIG] * 3
        fm[n - 2] = v
        rules[f"gopher_repetition.top_{n}gram"] = ("gopher_repetition", GopherRepetitionFilter(**{**rep_off, "top_n_grams": ((n, v),)}),
                                                   {**fm_off, "top_ngram_char_frac": fm})
    for n, v in DUP:
        fm = [BIG] * 6
        fm[n - 5] = v
        rules[f"gopher_repetition.dup_{n}gram_chars"] = ("gopher_repetition", GopherRepetitionFilter(**{**rep_off, "dup_n_grams": ((n, v),)}),
                                                         {**fm_off, "dup_ngram_char_frac": fm})
    rules["gopher_repetition"] = ("gopher_repetition", GopherRepetitionFilter(), {})
    rules["c4"] = ("c4", C4QualityFilter(**DT_C4), {})
    rules["c4.lorem_ipsum"] = ("c4", C4QualityFilter(**DT_C4, min_num_sentences=-1, filter_curly_bracket=False),
                               {"min_sentences": 0, "curly_bracket": False})
    rules["c4.curly_bracket"] = ("c4", C4QualityFilter(**DT_C4, min_num_sentences=-1, filter_lorem_ipsum=False),
                                 {"min_sentences": 0, "lorem_ipsum": False})
    rules["c4.sentences_after_line_rules"] = ("c4", C4QualityFilter(**DT_C4, filter_curly_bracket=False, filter_lorem_ipsum=False),
                                              {"curly_bracket": False, "lorem_ipsum": False})
    return rules


_W: dict = {}


def _init() -> None:
    from datatrove.pipeline.filters import FineWebQualityFilter

    from fmforge.config import DataConfig

    rules = _rules()
    own = {f"gopher_quality.{r}": fm for r, _, _, fm, _ in GOPHER_QUALITY}
    fm = {}
    for preset in ("fineweb", "default"):
        for name, (family, _, over) in rules.items():
            section = {"gopher_quality": "gopher", "gopher_repetition": "repetition", "c4": "c4"}[family]
            if preset == "default" and name in own:  # the rule under test at the default preset's own threshold
                over = {k: v for k, v in over.items() if k != own[name]}
            fm[(preset, name)] = getattr(DataConfig(filters=preset, **{section: over}), section)
    _W.update(rules=rules, fm=fm, fineweb_quality=FineWebQualityFilter())


def _fm_reason(family: str, text: str, toks, wh, cfg, preset: str):
    from fmforge.data import filters

    try:
        if family == "gopher_quality":
            return filters.gopher_quality(text, toks, cfg, preset), None
        if family == "gopher_repetition":
            return filters.gopher_repetition(text, *filters.repetition_tokens(toks, wh, preset), cfg, preset), None
        out, why = filters.c4_lines(text, cfg, None, preset)
        return why, out
    except ZeroDivisionError:  # a rule alone on a document without words (the others would have dropped it)
        return "error_no_words", None


def _dt_reason(flt, doc_id: str, text: str):
    from datatrove.data import Document

    doc = Document(text=text, id=doc_id)
    with np_quiet():
        r = flt.filter(doc)
    if r is True or (isinstance(r, tuple) and r[0]):
        return None, doc.text
    return (r[1] if isinstance(r, tuple) else "dropped"), None


class np_quiet:
    def __enter__(self):
        import numpy as np

        self.old = np.seterr(all="ignore")
        import warnings

        self.w = warnings.catch_warnings()
        self.w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *a):
        import numpy as np

        np.seterr(**self.old)
        self.w.__exit__(*a)


def _nonblank(text: str) -> str:
    return "\n".join(ln.strip() for ln in text.split("\n") if ln.strip())


def _one(doc: dict) -> dict:
    """Every rule's verdict on one document: {rule: [datatrove, fm fineweb, fm default]}
    (None = keep, else the reason), rules in turn so spaCy's word cache serves them all."""
    from fmforge.data.text import fix_text, word_hashes, words

    text = fix_text(doc["text"])
    toks = words(text)
    wh = word_hashes(toks)
    out, texts = {}, {}
    for name, (family, flt, _) in _W["rules"].items():
        dt, dt_text = _dt_reason(flt, doc["id"], text)
        row = [dt]
        for preset in ("fineweb", "default"):
            fm, fm_text = _fm_reason(family, text, toks, wh, _W["fm"][(preset, name)], preset)
            row.append(fm)
            if name == "c4":
                texts[preset] = dt_text is not None and fm_text is not None and _nonblank(dt_text) == _nonblank(fm_text)
        out[name] = row
    out["fineweb_quality"] = [_dt_reason(_W["fineweb_quality"], doc["id"], text)[0], None, None]
    return {"id": doc["id"], "rules": out, "c4_text_equal": texts}


def _dropped(rule: str, reason, side: int) -> bool:
    if reason is None:
        return False
    for key, names in C4_DROP_DOC.items():  # an isolated C4 document rule: that rule's drops only
        if rule == key.replace("c4_", "c4."):
            return reason == names[0 if side == 0 else 1]
    return True


def summarise(rows: list[dict]) -> dict:
    names = list(rows[0]["rules"])
    out = {}
    for p, preset in ((1, "fineweb"), (2, "default")):
        table = {}
        for name in names + ["chain_repetition_quality_c4"]:
            if name == "fineweb_quality":
                continue
            dt, fm, confusion, only = [], [], Counter(), {"fmforge_only": [], "datatrove_only": []}
            for r in rows:
                if name == "chain_repetition_quality_c4":
                    fam = ("gopher_repetition", "gopher_quality", "c4")
                    d = next((r["rules"][f][0] for f in fam if r["rules"][f][0]), None)
                    f = next((r["rules"][f][p] for f in fam if r["rules"][f][p]), None)
                else:
                    d, f = r["rules"][name][0], r["rules"][name][p]
                dd, fd = _dropped(name, d, 0), _dropped(name, f, 1)
                dt.append(dd)
                fm.append(fd)
                if dd != fd:
                    confusion[f"{d or 'keep'} | {f or 'keep'}"] += 1
                    only["fmforge_only" if fd else "datatrove_only"].append(r["id"])
            n = len(rows)
            row = {"docs": n, "agreement": round(sum(a == b for a, b in zip(dt, fm)) / n, 4),
                   "datatrove_drops": sum(dt), "fmforge_drops": sum(fm),
                   "fmforge_only_drops": len(only["fmforge_only"]), "datatrove_only_drops": len(only["datatrove_only"])}
            if confusion:
                row["disagreements_datatrove_vs_fmforge_reason"] = dict(confusion.most_common(8))
                row["examples"] = {k: v[:5] for k, v in only.items() if v}
            table[name] = row
        both_kept = [r["c4_text_equal"][preset] for r in rows
                     if r["rules"]["c4"][0] is None and r["rules"]["c4"][p] is None]
        table["c4"]["kept_by_both"] = len(both_kept)
        table["c4"]["kept_text_equal"] = round(sum(both_kept) / max(1, len(both_kept)), 4)
        out[preset] = table
    fq = Counter(r["rules"]["fineweb_quality"][0] or "keep" for r in rows)
    out["datatrove_fineweb_quality_only"] = {"docs": len(rows), "drops": len(rows) - fq["keep"],
                                             "reasons": dict(fq), "fmforge": "no equivalent rule"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", default="wikitext,readmes,peps", help=f"corpora, each reported apart: {','.join(heldout.LOADERS)}")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shared", type=Path, default=heldout.SHARED, help="the shared data folder")
    ap.add_argument("--limit", type=int, default=None, help="at most this many documents per corpus (a quick look)")
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/filter_agreement-DATE.json)")
    args = ap.parse_args()
    header = provenance(args, peers=("datatrove", "spacy", "numpy"))
    result = {"tuned_on": "the word split was tuned on the shared pretrain files (books, enwiki, PEPs): peps is a reference",
              "text": "both sides see fmforge's cleaned text (fix_text)", "corpora": {}}
    with mp.get_context("spawn").Pool(args.workers, initializer=_init) as pool:
        for src in args.sources.split(","):
            docs = heldout.LOADERS[src](args.shared)[: args.limit]
            t = time.perf_counter()
            rows = list(pool.imap(_one, docs, chunksize=4))
            s = summarise(rows)
            s["docs"], s["mb"], s["digest"] = len(docs), round(sum(len(d["text"].encode()) for d in docs) / 1e6, 2), heldout.digest(docs)
            s["seconds"] = round(time.perf_counter() - t, 1)
            result["corpora"][src] = s
            print(f"{src}: {len(docs)} docs, {s['seconds']} s", flush=True)
            for preset in ("fineweb", "default"):
                for name, row in s[preset].items():
                    print(f"  {preset:8s} {name:42s} agreement {row['agreement']:.4f}  drops dt {row['datatrove_drops']:4d} "
                          f"fm {row['fmforge_drops']:4d}", flush=True)
    path = write_result("filter_agreement", header, result, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
