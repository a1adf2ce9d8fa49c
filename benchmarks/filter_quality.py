"""Filter quality: how much good text each preset keeps and how much junk it removes.

On the labelled set of benchmarks/filter_evalset.py (real good documents of six sources,
junk of fifteen kinds made from them; dev/test held out by source document):
- per preset (`default`, `fineweb`) and split: per good source the share of documents and of
  bytes kept, per junk kind the share removed, and per rule what it removed (first failing
  rule, in prepare's order) of good and of bad documents;
- the filters alone (prepare's per-document stages without language id) and the whole
  per-document pipeline (with language id);
- threshold choice on dev: each swept value of a `default` threshold, the value chosen
  (most junk removed while every good source keeps >= 97%), checked once on test;
- the per-document quality score (meta.quality): ROC AUC good vs bad on test;
- agreement of `fineweb` with datatrove's filters, decision for decision, on a sample of the
  test part (never used to tune anything), when datatrove (and spaCy) are installed;
- `--acceptance`: `fmforge data prepare`'s own run on the shared books + Wikipedia
  (`--acceptance-only`: that alone, a few minutes).

    python benchmarks/filter_quality.py                 # writes benchmarks/results/filter_quality-<date>.json
    python benchmarks/filter_quality.py --tiny --out /tmp/fq.json   # a quick check (few documents)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fmforge.config import DataConfig  # noqa: E402
from fmforge.data import filters, langid, quality  # noqa: E402
from fmforge.data.stages import Stages  # noqa: E402
from fmforge.data.text import fix_text, words  # noqa: E402

import filter_evalset  # noqa: E402
from record import provenance, write_result  # noqa: E402

GOOD_TARGET, BAD_TARGET = 0.97, 0.90
# default-preset thresholds swept on dev, one at a time, around the recipe default
SWEEP = {"gopher.min_alpha_words": [0.8, 0.7, 0.6],
         "c4.max_curly_lines": [0.05, 0.1, 0.2, 0.3],
         "c4.max_lowercase_starts": [0.3, 0.5, 0.7],
         "c4.min_sentences": [3, 5, 7]}


def config(preset: str, langid: bool, overrides: dict | None = None) -> DataConfig:
    """prepare's data section as the benchmark runs it: PII and de-duplication do not decide
    quality, so they are off; language id only for the pipeline figures."""
    cfg = DataConfig(filters=preset, pii=[], languages=["en"] if langid else [], workers=1, dedup_exact=False,
                     near_dedup={"enabled": False})
    for key, value in (overrides or {}).items():
        section, field = key.split(".")
        setattr(getattr(cfg, section), field, value)
    return cfg


def as_input(d: dict) -> dict:
    meta = {"language": "python"} if d["kind"] == "code" else {}
    return {"id": d["id"], "text": d["text"], "source": d["source"], "meta": json.dumps(meta)}


def judge(docs: list[dict], cfg: DataConfig) -> tuple[list[str | None], list[float]]:
    """The reason prepare's per-document stages remove each document for (None: kept), and
    each document's quality score (meta.quality of a kept one; computed for a removed one)."""
    stages, reasons, scores = Stages(cfg), [], []
    for d in docs:
        kept, st = stages.run([as_input(d)])
        if kept:
            reasons.append(None)
            scores.append(json.loads(kept[0].doc["meta"])["quality"])
        else:
            reasons.append(next(iter(st.removed)))
            text = fix_text(d["text"], cfg.normalize, cfg.repair_unicode)
            scores.append(quality.score(text, words(text), cfg, d["kind"], cfg.filters))
    return reasons, scores


def languages(docs: list[dict]) -> list[bool]:
    """Whether prepare's language stage (the recipe default: English, p >= 0.65) removes each
    prose document; it runs before the filters, so pipeline = language, then filters."""
    cfg = DataConfig()
    out = []
    for d in docs:
        if d["kind"] == "code":
            out.append(False)
            continue
        lang, p = langid.detect(fix_text(d["text"]), cfg.langid_backend)
        out.append(lang not in cfg.languages or p < cfg.langid_min_score)
    return out


def rates(docs: list[dict], reasons: list[str | None]) -> dict:
    good, bad = defaultdict(lambda: [0, 0, 0, 0]), defaultdict(lambda: [0, 0])
    by_rule = defaultdict(lambda: {"good": Counter(), "bad": Counter()})
    for d, r in zip(docs, reasons):
        if d["label"] == "good":
            g = good[d["source"]]
            n = len(d["text"].encode("utf-8", "surrogatepass"))
            g[0] += 1
            g[2] += n
            if r is None:
                g[1] += 1
                g[3] += n
            else:
                by_rule[r]["good"][d["source"]] += 1
        else:
            b = bad[d["generator"]]
            b[0] += 1
            if r is not None:
                b[1] += 1
                by_rule[r]["bad"][d["generator"]] += 1
    n_bad = sum(b[0] for b in bad.values())
    removed = sum(b[1] for b in bad.values())
    good_out = {s: {"docs": g[0], "docs_kept": round(g[1] / g[0], 4), "bytes_kept": round(g[3] / max(1, g[2]), 4)}
                for s, g in sorted(good.items())}
    worst = min((v["docs_kept"] for v in good_out.values()), default=1.0)
    return {"good": good_out, "bad": {k: {"docs": b[0], "removed": round(b[1] / b[0], 4)} for k, b in sorted(bad.items())},
            "bad_removed": round(removed / max(1, n_bad), 4), "bad_docs": n_bad, "worst_good_source_kept": worst,
            "targets_met": worst >= GOOD_TARGET and removed / max(1, n_bad) >= BAD_TARGET,
            "by_rule": {r: {"good": dict(v["good"]), "bad": dict(v["bad"])} for r, v in sorted(by_rule.items())}}


SWEPT_OFF = {"gopher.min_alpha_words": 0.0, "c4.max_curly_lines": 1.0, "c4.max_lowercase_starts": 1.0,
             "c4.min_sentences": 0}


def swept_values(d: dict, cfg: DataConfig) -> dict:
    """The values the swept rules compare with their thresholds, on the text they judge."""
    text = fix_text(d["text"], cfg.normalize, cfg.repair_unicode)
    if d["kind"] == "code":
        return {}
    toks = words(text)
    got: dict = {}
    c4 = cfg.c4.model_copy(update={"min_sentences": 0, "max_lowercase_starts": 1.0})
    out, _ = filters.c4_lines(text, c4, None, "default", got)
    share, n = filters.lowercase_starts(out)
    return {"gopher.min_alpha_words": quality.gopher_measures(text, toks, cfg.gopher)["gopher_few_alphabetic_words"][0],
            "c4.max_curly_lines": filters.curly_line_share(text.split("\n")),
            "c4.max_lowercase_starts": share if n >= filters.LOWERCASE_MIN_SENTENCES else 0.0,
            "c4.min_sentences": got.get("sentences", 0)}


def _fails(key: str, value, threshold) -> bool:
    return value < threshold if key in ("gopher.min_alpha_words", "c4.min_sentences") else value > threshold


def sweep(dev: list[dict], log) -> dict:
    """One threshold at a time on dev; keep the value that removes most junk while every good
    source keeps >= 97% of its documents (the recipe default when none does better).
    Exact and cheap: one pass with the swept rules off gives every other rule's decision, the
    swept rules' values are measured once, and each candidate threshold is a comparison."""
    base_cfg = config("default", False)
    default = {k: getattr(getattr(base_cfg, k.split(".")[0]), k.split(".")[1]) for k in SWEEP}
    others, _ = judge(dev, config("default", False, SWEPT_OFF))
    values = [swept_values(d, base_cfg) for d in dev]
    chosen, table = {}, {}
    for key, candidates in SWEEP.items():
        rows = []
        for v in candidates:
            th = {**default, key: v}
            reasons = [r if r is not None else next((k for k in SWEEP if vals and _fails(k, vals[k], th[k])), None)
                       for r, vals in zip(others, values)]
            r = rates(dev, reasons)
            rows.append({"value": v, "worst_good_source_kept": r["worst_good_source_kept"], "bad_removed": r["bad_removed"],
                         "good_kept": {s_: g["docs_kept"] for s_, g in r["good"].items()}})
            log(f"  dev {key}={v}: worst good source {r['worst_good_source_kept']:.3f}, bad removed {r['bad_removed']:.3f}")
        ok = [row for row in rows if row["worst_good_source_kept"] >= GOOD_TARGET] or rows
        best = max(ok, key=lambda row: (row["bad_removed"], row["worst_good_source_kept"], row["value"] == default[key]))
        chosen[key] = best["value"]
        table[key] = rows
    return {"swept": table, "chosen": chosen, "recipe_default": default}


def auc(docs: list[dict], scores: list[float]) -> float | None:
    """ROC AUC of the quality score, good (positive) vs bad, by the rank-sum formula."""
    scored = sorted(((sc, d["label"] == "good") for d, sc in zip(docs, scores)), key=lambda x: x[0])
    pos = sum(1 for _, g in scored if g)
    neg = len(scored) - pos
    if not pos or not neg:
        return None
    rank_sum, i = 0.0, 0
    while i < len(scored):  # average ranks over ties
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        rank_sum += sum(1 for k in range(i, j) if scored[k][1]) * (i + j + 1) / 2
        i = j
    return round((rank_sum - pos * (pos + 1) / 2) / (pos * neg), 4)


def datatrove_agreement(docs: list[dict], max_mb: float, log) -> dict:
    """fineweb's filter decisions vs datatrove's GopherRepetition + GopherQuality + C4 (FineWeb's
    settings) on the same cleaned texts."""
    try:
        import importlib.metadata

        from datatrove.data import Document
        from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
        import spacy  # noqa: F401  (datatrove's English word tokenizer)
    except ImportError as e:
        return {"skipped": f"datatrove or spaCy not installed ({e})"}
    cfg = DataConfig(filters="fineweb", pii=[], languages=[], min_chars=0)
    blocks = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False)]
    sample, total = [], 0
    for d in sorted((d for d in docs if d["kind"] == "prose"), key=lambda d: len(d["text"])):
        if total + len(d["text"]) > max_mb * 1e6:
            break
        sample.append(d)
        total += len(d["text"])
    t0 = time.perf_counter()
    ours, _ = judge(sample, cfg)
    agree, diffs = 0, []
    for d, r in zip(sample, ours):
        text = fix_text(d["text"], cfg.normalize, cfg.repair_unicode)
        doc, why = Document(text=text, id=d["id"]), None
        for b in blocks:
            res = b.filter(doc)
            if res is not True and not (isinstance(res, tuple) and res[0]):
                why = res[1] if isinstance(res, tuple) else b.name
                break
        if (why is None) == (r is None):
            agree += 1
        elif len(diffs) < 20:
            diffs.append({"id": d["id"], "fmforge": r, "datatrove": why})
    log(f"  datatrove agreement {agree}/{len(sample)} in {time.perf_counter() - t0:.0f} s")
    return {"datatrove": importlib.metadata.version("datatrove"), "docs": len(sample), "mb": round(total / 1e6, 2),
            "agreement": round(agree / max(1, len(sample)), 4), "disagreements": diffs}


def acceptance(shared: Path, work: Path, log) -> dict:
    """`prepare` with the default recipe on the shared books + Wikipedia: the books' text kept and
    the Wikipedia articles of >= 200 words kept; the card's per-rule table."""
    import shutil

    from fmforge.data.collect import collect
    from fmforge.data.documents import read_docs
    from fmforge.data.prepare import prepare

    if work.exists():
        shutil.rmtree(work)
    pre = shared / "pretrain"
    collect([str(pre / "books.jsonl.zst"), str(pre / "enwiki.jsonl.zst")], ["*"], work / "raw")
    raw = {d["id"]: d for d in read_docs(work / "raw")}
    t0 = time.perf_counter()
    s = prepare(work / "raw", work / "out", DataConfig(workers=2))
    kept = {d["id"]: d for d in read_docs(work / "out")}
    out = {"seconds": round(time.perf_counter() - t0, 1), "removed": dict(s.removed), "measured": s.measured}

    def path(d: dict) -> str:  # "books.jsonl.zst:line:1": the source is the folder, the file is in meta
        return json.loads(d["meta"] or "{}").get("path", "")

    if not any(path(d) for d in raw.values()):
        raise SystemExit("collect wrote no meta.path: cannot tell books from Wikipedia")
    for name, pick in (("books", lambda d: path(d).startswith("books.")),
                       ("enwiki_200_words", lambda d: path(d).startswith("enwiki.") and len(d["text"].split()) >= 200)):
        ids = [i for i, d in raw.items() if pick(d)]
        b_in = sum(len(raw[i]["text"].encode()) for i in ids)
        b_out = sum(len(kept[i]["text"].encode()) for i in ids if i in kept)
        out[name] = {"docs": len(ids), "docs_kept": round(sum(i in kept for i in ids) / max(1, len(ids)), 4),
                     "text_kept": round(b_out / max(1, b_in), 4)}
        log(f"  prepare {name}: {out[name]}")
    shutil.rmtree(work)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=filter_evalset.SHARED)
    ap.add_argument("--per-source", type=int, default=400)
    ap.add_argument("--per-generator", type=int, default=60)
    ap.add_argument("--tiny", action="store_true", help="a quick check: 6 documents a source (of <= 300,000 characters), 4 a junk kind, no sweep")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--sweep-only", action="store_true", help="only the dev threshold sweep")
    ap.add_argument("--datatrove-mb", type=float, default=2.0, help="test-part prose compared with datatrove")
    ap.add_argument("--acceptance", action="store_true", help="also run prepare on the shared books + Wikipedia")
    ap.add_argument("--acceptance-only", action="store_true",
                    help="only prepare on the shared books + Wikipedia (writes filter_quality_acceptance-<date>.json)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fmforge-filter-quality"))
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    header = provenance(a, peers=("datatrove", "spacy", "numpy"))
    if not (a.shared / "pretrain").exists():
        sys.exit(f"shared data absent: {a.shared}")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if a.acceptance_only:
        path = write_result("filter_quality_acceptance", header,
                            {"acceptance_prepare_books_enwiki": acceptance(a.shared, a.work, log)}, a.out)
        log(f"-> {path}")
        return
    per_source, per_gen = (6, 4) if a.tiny else (a.per_source, a.per_generator)
    t0 = time.perf_counter()
    docs = filter_evalset.build(a.shared, per_source, per_gen, max_chars=300_000 if a.tiny else None)
    parts = {p: [d for d in docs if d["split"] == p] for p in ("dev", "test")}
    log(f"evaluation set: {len(docs)} documents ({len(parts['dev'])} dev, {len(parts['test'])} test) "
        f"in {time.perf_counter() - t0:.0f} s")
    figures: dict = {"evaluation_set": {
        "per_source": per_source, "per_generator": per_gen,
        "docs": {p: dict(Counter(d["source"] if d["label"] == "good" else d["generator"] for d in ds))
                 for p, ds in parts.items()},
        "mb": {p: round(sum(len(d["text"]) for d in ds) / 1e6, 2) for p, ds in parts.items()}},
        "targets": {"good_docs_kept_per_source": GOOD_TARGET, "bad_removed": BAD_TARGET}}
    chosen = {}
    if not (a.tiny or a.no_sweep):
        log("threshold sweep on dev (default preset, filters only)")
        figures["dev_sweep"] = sweep(parts["dev"], log)
        sw = figures["dev_sweep"]
        chosen = {k: v for k, v in sw["chosen"].items() if v != sw["recipe_default"][k]}  # what differs from the recipe
        if a.sweep_only:
            path = write_result("filter_quality_sweep", header, figures, a.out)
            log(f"chosen on dev: {sw['chosen']} -> {path}")
            return
    figures["default_overrides_from_dev"] = chosen
    for part in ("dev", "test"):
        lang = languages(parts[part])
        for preset in ("default", "fineweb"):
            t1 = time.perf_counter()
            reasons, scores = judge(parts[part], config(preset, False, chosen if preset == "default" else None))
            r = rates(parts[part], reasons)
            r["seconds"] = round(time.perf_counter() - t1, 1)
            r["quality_score_auc"] = auc(parts[part], scores)
            pipe = rates(parts[part], ["language" if gone else why for gone, why in zip(lang, reasons)])
            figures.setdefault(part, {}).setdefault("filters", {})[preset] = r
            figures[part].setdefault("pipeline", {})[preset] = pipe
            log(f"{part} {preset}: worst good source kept {r['worst_good_source_kept']:.3f}, bad removed "
                f"{r['bad_removed']:.3f}; with language id {pipe['worst_good_source_kept']:.3f} / {pipe['bad_removed']:.3f} "
                f"({r['seconds']} s)")
    figures["fineweb_vs_datatrove_test"] = datatrove_agreement(parts["test"], 0.3 if a.tiny else a.datatrove_mb, log)
    if a.acceptance:
        figures["acceptance_prepare_books_enwiki"] = acceptance(a.shared, a.work, log)
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    path = write_result("filter_quality", header, figures, a.out)
    t = figures["test"]["filters"]
    log(f"test, filters: default keeps >= {t['default']['worst_good_source_kept']:.3f} of every good source and removes "
        f"{t['default']['bad_removed']:.3f} of junk; fineweb {t['fineweb']['worst_good_source_kept']:.3f} / "
        f"{t['fineweb']['bad_removed']:.3f} -> {path}")


if __name__ == "__main__":
    main()
