"""Data pipeline benchmark: fmforge vs datatrove, side by side in the same run.

Corpus: ../shared/data/pretrain (books, Wikipedia, PEPs, Shakespeare, ~100 MB) plus
planted near-duplicates: copies of real documents with ~1% of words replaced and a line
added or dropped at one end, each checked to have word 5-gram Jaccard >= 0.85 with its
original, shuffled in.

Both systems run the equivalent pipeline on the same JSONL files with the same number of
workers: Gopher repetition + Gopher quality + C4 (FineWeb's settings) + MinHash dedup
(5-grams). datatrove runs as shipped in its FineWeb example (spaCy words, 14x8 MinHash
buckets, the 4-stage disk-based dedup, LocalPipelineExecutor); fmforge runs `collect` +
`prepare` with language id, PII and exact dedup off (datatrove's FineWeb pass has no
equivalent of them in that part). Reported: MB/s and docs/s per core per stage and end to
end, keep/drop agreement of the filters, near-dup recall and precision on the planted set.

    .venv/bin/python benchmarks/data_pipeline.py            # full corpus, ~10 min on 2 cores
    .venv/bin/python benchmarks/data_pipeline.py --limit-mb 10   # a quick look

Needs the bench extra (datatrove[processing], spacy). Writes
benchmarks/results/data_pipeline-<date>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fmforge.config import DataConfig  # noqa: E402
from fmforge.data.collect import CollectStats, collect  # noqa: E402
from fmforge.data.documents import read_docs  # noqa: E402
from fmforge.data.prepare import prepare  # noqa: E402
from fmforge.data.readers import iter_file  # noqa: E402
from fmforge.data.text import ngram_hashes, word_hashes, words  # noqa: E402
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

SHARED = ROOT.parent / "shared" / "data" / "pretrain"
FILES = ["books.jsonl.zst", "enwiki.jsonl.zst", "peps.tar.gz", "tinyshakespeare.txt"]


def load_corpus(limit_mb: float | None) -> list[dict]:
    docs, size = [], 0
    for name in FILES:
        for d in iter_file(SHARED / name, CollectStats()):
            docs.append({"id": f"{name}:{len(docs)}", "text": d["text"]})
            size += len(d["text"].encode())
    if limit_mb:  # a sample across all sources, not the first files only
        random.Random(0).shuffle(docs)
        out, size = [], 0
        for d in docs:
            if size > limit_mb * 1e6:
                break
            out.append(d)
            size += len(d["text"].encode())
        docs = out
    return docs


def shingles(text: str):
    return set(ngram_hashes(word_hashes(words(text)), 5).tolist())


def plant(docs: list[dict], n: int, rng: random.Random) -> list[tuple[str, str, float]]:
    """Append n near-copies; returns (original id, copy id, true Jaccard)."""
    pool = [d for d in docs if 300 <= len(d["text"].split()) <= 40_000]
    rng.shuffle(pool)
    pairs = []
    for d in pool:
        if len(pairs) == n:
            break
        lines = d["text"].split("\n")
        for frac in (0.01, 0.005):
            toks = " ".join(lines[1:] if rng.random() < 0.5 and len(lines) > 3 else lines).split(" ")
            for i in rng.sample(range(len(toks)), max(1, int(len(toks) * frac))):
                toks[i] = rng.choice(["lorem", "quantum", "zebra", "marmalade", "obsidian"]) + str(rng.randint(0, 99))
            text = " ".join(toks)
            if rng.random() < 0.5:
                text += "\nThis copy was mirrored from another site."
            a, b = shingles(d["text"]), shingles(text)
            j = len(a & b) / len(a | b)
            if j >= 0.85:
                copy = {"id": f"planted:{d['id']}", "text": text}
                docs.append(copy)
                pairs.append((d["id"], copy["id"], j))
                break
    return pairs


def write_jsonl(docs: list[dict], folder: Path, parts: int) -> None:
    folder.mkdir(parents=True)
    for p in range(parts):
        with open(folder / f"part-{p:02d}.jsonl", "w") as f:
            for d in docs[p::parts]:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------ fmforge


def fm_config(**kw) -> DataConfig:
    return DataConfig(languages=[], pii=[], dedup_exact=False, min_chars=0, **kw)


def run_fmforge(inp: Path, work: Path, workers: int) -> dict:
    t0 = time.perf_counter()
    collect([str(p) for p in sorted(inp.glob("*.jsonl"))], ["*"], work / "raw")
    t_collect = time.perf_counter() - t0
    s = prepare(work / "raw", work / "out", fm_config(workers=workers))
    total = time.perf_counter() - t0
    kept = {json.loads(d["meta"])["id"] for d in read_docs(work / "out", columns=["meta"])}
    # the filters' own decisions, before dedup, from a run without near-dedup
    prepare(work / "raw", work / "filtered", fm_config(workers=workers, near_dedup={"enabled": False}))
    passed = {json.loads(d["meta"])["id"] for d in read_docs(work / "filtered", columns=["meta"])}
    return {"seconds": total, "collect_seconds": t_collect, "prepare_seconds": s.seconds, "kept": kept,
            "passed_filters": passed, "removed": dict(s.removed)}


def fm_stage_speeds(docs: list[dict]) -> dict:
    """Single-core MB/s and docs/s of each stage over the whole corpus, in-process."""
    from fmforge.data import filters, langid, pii
    from fmforge.data.minhash import permutations, signature
    from fmforge.data.text import fix_text

    cfg = DataConfig()
    perms = permutations(128, 1)
    texts = [d["text"] for d in docs]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    toks = [words(t) for t in texts]
    whs = [word_hashes(t) for t in toks]
    stages = {
        "clean (ftfy-guarded + NFC)": lambda i: fix_text(texts[i]),
        "words (shared tokenisation)": lambda i: word_hashes(words(texts[i])),
        "gopher_quality": lambda i: filters.gopher_quality(texts[i], toks[i], cfg.gopher),
        "gopher_repetition": lambda i: filters.gopher_repetition(texts[i], toks[i], whs[i], cfg.repetition),
        "c4": lambda i: filters.c4_lines(texts[i], cfg.c4),
        "minhash_signature": lambda i: signature(whs[i], 5, perms),
        "pii": lambda i: pii.redact(texts[i], cfg.pii),
        "langid (py3langid, 2k chars)": lambda i: langid.detect(texts[i]),
    }
    langid.detect("warm up the model")
    out = {}
    for name, fn in stages.items():
        t0 = time.perf_counter()
        for i in range(len(texts)):
            fn(i)
        dt = time.perf_counter() - t0
        out[name] = {"mb_per_s_per_core": round(mb / dt, 2), "docs_per_s_per_core": round(len(texts) / dt, 1)}
        print(f"  fmforge {name:32s} {mb / dt:8.2f} MB/s/core", flush=True)
    return out


# ------------------------------------------------------------------ datatrove


def run_datatrove(inp: Path, work: Path, workers: int, tasks: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter)
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    cfg = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=14, hashes_per_bucket=8, n_grams=5)
    logs, times = work / "logs", {}

    def run(name, pipeline, n_tasks):
        t0 = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=n_tasks, workers=workers, logging_dir=str(logs / name)).run()
        times[name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    run("filters", [JsonlReader(str(inp), glob_pattern="*.jsonl"), GopherRepetitionFilter(), GopherQualityFilter(),
                    C4QualityFilter(filter_no_terminal_punct=False), JsonlWriter(str(work / "filtered"))], tasks)
    run("minhash_signature", [JsonlReader(str(work / "filtered")),
                              MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg)], tasks)
    run("minhash_buckets", [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                                config=cfg)], cfg.num_buckets)
    run("minhash_cluster", [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"),
                                                config=cfg)], 1)
    run("minhash_filter", [JsonlReader(str(work / "filtered")), MinhashDedupFilter(input_folder=str(work / "remove")),
                           JsonlWriter(str(work / "deduped"))], tasks)
    total = time.perf_counter() - t0
    step_times = _datatrove_step_times(logs / "filters")
    return {"seconds": total, "stage_seconds": times, "step_cpu_seconds": step_times,
            "passed_filters": _ids(work / "filtered"), "kept": _ids(work / "deduped")}


def _ids(folder: Path) -> set[str]:
    import gzip

    out = set()
    for p in folder.glob("*.jsonl.gz"):
        with gzip.open(p, "rt") as f:
            out.update(json.loads(line)["id"] for line in f)
    return out


def _datatrove_step_times(logdir: Path) -> dict:
    """CPU seconds per block of the filter pass, summed over tasks (datatrove's stats.json)."""
    try:
        stats = json.loads((logdir / "stats.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    out = {}
    for block in stats:
        ts = block.get("time_stats") or {}
        if "total" in ts:
            out[block["name"]] = ts["total"]
    return out


# ------------------------------------------------------------------ scoring


def agreement(ids: list[str], a: set[str], b: set[str]) -> float:
    return sum((i in a) == (i in b) for i in ids) / len(ids)


def near_dup_quality(pairs, passed: set[str], kept: set[str]) -> dict:
    eligible = [(o, c) for o, c, _ in pairs if o in passed and c in passed]
    reduced = sum(((o in kept) + (c in kept)) == 1 for o, c in eligible)
    removed = passed - kept
    partner = {}
    for o, c in eligible:
        partner[o], partner[c] = c, o
    correct = sum(1 for r in removed if r in partner and partner[r] in kept)
    return {"planted_pairs_eligible": len(eligible), "recall": reduced / max(1, len(eligible)),
            "removed": len(removed), "precision": correct / max(1, len(removed)),
            "removed_not_planted": len(removed) - correct}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit-mb", type=float, default=None, help="use a sample of this many MB")
    ap.add_argument("--planted", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fmforge-bench-data"))
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/data_pipeline-DATE.json)")
    args = ap.parse_args()
    header = provenance(args, peers=("datatrove", "numpy"))
    if not SHARED.exists():
        sys.exit(f"shared data not found: {SHARED}")
    import datatrove  # noqa: F401  (fail early when the peer is missing)

    shutil.rmtree(args.work, ignore_errors=True)
    docs = load_corpus(args.limit_mb)
    pairs = plant(docs, args.planted, random.Random(1))
    random.Random(2).shuffle(docs)
    mb = sum(len(d["text"].encode()) for d in docs) / 1e6
    print(f"corpus: {len(docs):,} docs, {mb:.1f} MB, {len(pairs)} planted near-duplicates", flush=True)
    tasks = max(4, 2 * args.workers)
    write_jsonl(docs, args.work / "input", tasks)
    ids = [d["id"] for d in docs]

    print("fmforge: collect + prepare ...", flush=True)
    fm = run_fmforge(args.work / "input", args.work / "fm", args.workers)
    print(f"  {fm['seconds']:.1f} s", flush=True)
    print("datatrove: FineWeb-style filters + 4-stage MinHash ...", flush=True)
    dt = run_datatrove(args.work / "input", args.work / "dt", args.workers, tasks)
    print(f"  {dt['seconds']:.1f} s", flush=True)
    print("fmforge per-stage speeds (1 core) ...", flush=True)
    stages = fm_stage_speeds(docs)

    per_core = lambda secs: mb / secs / args.workers  # noqa: E731
    dt_filter_cpu = sum(dt["step_cpu_seconds"].values()) or None
    result = {
        "corpus": {"docs": len(docs), "mb": round(mb, 2), "planted_pairs": len(pairs),
                   "planted_min_jaccard": round(min(j for _, _, j in pairs), 3) if pairs else None,
                   "sources": FILES, "limit_mb": args.limit_mb},
        "workers": args.workers,
        "pipeline": "Gopher repetition + Gopher quality + C4 (no terminal-punct rule) + MinHash 5-gram dedup",
        "fmforge": {
            "end_to_end_seconds": round(fm["seconds"], 2), "collect_seconds": round(fm["collect_seconds"], 2),
            "end_to_end_mb_per_s_per_core": round(per_core(fm["seconds"]), 3),
            "end_to_end_docs_per_s_per_core": round(len(docs) / fm["seconds"] / args.workers, 1),
            "minhash": "128 perms, 16 bands x 8 rows, verify estimated Jaccard >= 0.75, union-find",
            "stages_single_core": stages, "removed": fm["removed"],
            "near_dup": near_dup_quality(pairs, fm["passed_filters"], fm["kept"]),
        },
        "datatrove": {
            "end_to_end_seconds": round(dt["seconds"], 2),
            "end_to_end_mb_per_s_per_core": round(per_core(dt["seconds"]), 3),
            "end_to_end_docs_per_s_per_core": round(len(docs) / dt["seconds"] / args.workers, 1),
            "minhash": "FineWeb: 64-bit hashes, 14 buckets x 8 hashes, 5-grams",
            "stage_wall_seconds": {k: round(v, 2) for k, v in dt["stage_seconds"].items()},
            "filter_blocks_cpu_seconds": dt["step_cpu_seconds"],
            "filters_mb_per_s_per_core": round(mb / dt_filter_cpu, 3) if dt_filter_cpu else None,
            "near_dup": near_dup_quality(pairs, dt["passed_filters"], dt["kept"]),
        },
        "filter_agreement": agreement(ids, fm["passed_filters"], dt["passed_filters"]),
    }
    result["speedup_end_to_end"] = round(dt["seconds"] / fm["seconds"], 2)
    nd = result["fmforge"]["near_dup"]
    result["targets"] = {
        "speedup_ge_5x": result["speedup_end_to_end"] >= 5, "agreement_ge_0.99": result["filter_agreement"] >= 0.99,
        "near_dup_recall_ge_0.95": nd["recall"] >= 0.95, "near_dup_precision_ge_0.99": nd["precision"] >= 0.99}
    path = write_result("data_pipeline", header, result, args.out)
    print(json.dumps({k: result[k] for k in ("speedup_end_to_end", "filter_agreement", "targets")}, indent=2))
    print(f"fmforge {result['fmforge']['end_to_end_mb_per_s_per_core']} MB/s/core, datatrove "
          f"{result['datatrove']['end_to_end_mb_per_s_per_core']} MB/s/core; near-dup fmforge {nd}, "
          f"datatrove {result['datatrove']['near_dup']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
