"""Near-duplicate removal at graded similarity: fmforge vs datatrove's MinHash, same run.

Corpus: held-out documents (benchmarks/heldout.py; default WikiText-2 articles + PEPs).
Planted into it:
  - positives: for each Jaccard bin [0.50, 0.55), ... [0.90, 0.95], ``--per-bin`` copies of
    distinct real documents, each edited (word substitutions, deleted spans, spans inserted
    from another document) until its true Jaccard with the original lands in the bin. The
    Jaccard is exact, over fmforge's shingles (word 5-grams of fmforge.data.text.words,
    lower-cased, as prepare's MinHash hashes them);
  - hard negatives: groups of 2-3 documents sharing a long boilerplate header and footer (a
    real text chunk, 40-85% of each document's words: a site template) around different
    bodies from one topic (sections of one article / PEP). They are different documents:
    removing one is an error. Their true in-group Jaccard spans about 0.25-0.75.
The documents used as originals, topics or boilerplate are not also left as background.

Both systems see the same JSONL files with every filter off: fmforge ``collect`` +
``prepare`` (quality filters, language id, PII and exact dedup off; near-dedup as shipped:
128 permutations, 16 bands x 8 rows, verify >= 0.75); datatrove's 4-stage MinHash dedup as
in its FineWeb example (64-bit hashes, 14 buckets x 8, 5-grams). Per bin and per split
(dev/test by document id; no setting is tuned here, so both are reports):
  recall    = share of planted pairs of the bin of which exactly one document survives;
  precision = of the documents removed whose evidence falls in the bin, the share that are
              a planted copy or original whose partner was kept, or a background document
              whose highest true Jaccard with a kept document is >= 0.50 (a near-duplicate the
              held-out corpus already held, e.g. PEP 467 and PEP 502 at 0.94: removing it is
              right; counted apart as ``natural_removed``). The evidence of any other removed
              document is its highest true Jaccard with a kept document; hard negatives are
              wrong removals whatever their Jaccard;
  hard negatives removed, by in-group Jaccard bin.

    python benchmarks/near_dup.py [--per-bin 40] [--workers 16] [--shared ../shared/data]

Needs datatrove and spaCy (the bench extra). Writes benchmarks/results/near_dup-<date>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import heldout  # noqa: E402
from fmforge.data.text import fix_text, ngram_hashes, word_hashes, words  # noqa: E402
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

BINS = [round(0.5 + 0.05 * i, 2) for i in range(9)]  # lower edges; the last bin is [0.90, 0.95]
_HEADING = re.compile(r"\n(?:= = [^=].*? = =|[^\n]+\n[=\-~^]{3,})\n")


def shingles(text: str) -> set[int]:
    return set(ngram_hashes(word_hashes(words(fix_text(text))), 5).tolist())


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def bin_of(j: float) -> str:
    if j < BINS[0]:
        return "<0.50"
    for lo in reversed(BINS):
        if j >= lo:
            return f"{lo:.2f}" if lo < 0.9 or j < 0.95 else ">=0.95"
    return "<0.50"


def apply_edits(toks: list[str], ops: list[tuple], n: int) -> str:
    out = list(toks)
    for kind, u, k, donor in ops[:n]:
        i = int(u * len(out))
        if kind == "sub" and out:
            out[min(i, len(out) - 1)] = donor[0]
        elif kind == "del" and len(out) > k:
            del out[i : i + k]
        else:
            out[i:i] = donor
    return " ".join(out)


def plant_copy(text: str, lo: float, hi: float, pool: list[str], rng: random.Random):
    """An edited copy whose true Jaccard with `text` is in [lo, hi), or None."""
    toks, orig = text.split(" "), shingles(text)
    ops = []
    for _ in range(2 * len(toks)):
        kind = rng.choice(("sub", "sub", "del", "ins"))
        k = rng.randint(1, 8)
        start = rng.randrange(max(1, len(pool) - k))
        ops.append((kind, rng.random(), k, pool[start : start + (1 if kind == "sub" else k)]))
    target = rng.uniform(lo, hi)
    a, b = 1, len(ops)  # the fewest edits that bring the Jaccard below target (J falls with edits)
    while a < b:
        m = (a + b) // 2
        if jaccard(orig, shingles(apply_edits(toks, ops, m))) < target:
            b = m
        else:
            a = m + 1
    for n in (a - 1, a, a + 1):
        copy = apply_edits(toks, ops, max(1, n))
        j = jaccard(orig, shingles(copy))
        if lo <= j < hi:
            return copy, j
    return None


def sections(text: str, min_words: int = 120) -> list[str]:
    return [s.strip() for s in _HEADING.split(text) if len(s.split()) >= min_words]


def build(docs: list[dict], per_bin: int, groups: int, rng: random.Random):
    """(corpus docs, planted pairs, hard-negative groups)."""
    rng.shuffle(docs)
    pool = [w for d in docs[:50] for w in d["text"].split(" ")]
    used, out, pairs, negs = set(), [], [], []
    cands = [d for d in docs if 200 <= len(d["text"].split()) <= 6000]
    it = iter(cands)
    for lo in BINS:
        hi = round(lo + 0.05, 2)
        got = 0
        for d in it:
            r = plant_copy(d["text"], lo, hi, pool, rng)
            if r is None:
                continue
            used.add(d["id"])
            copy_id = f"copy:{d['id']}"
            out += [d, {"id": copy_id, "text": r[0]}]
            pairs.append({"original": d["id"], "copy": copy_id, "jaccard": round(r[1], 4), "bin": f"{lo:.2f}",
                          "split": heldout.split_of(d["id"])})
            got += 1
            if got == per_bin:
                break
    rest = [d for d in docs if d["id"] not in used]
    topics = [(d, s) for d in rest if len(s := sections(d["text"])) >= 2]
    donors = [d for d in rest if len(d["text"].split()) >= 1500]
    for g, (topic, secs) in enumerate(topics[:groups]):
        if not donors:
            break
        donor = donors.pop()
        if donor["id"] == topic["id"]:
            continue
        used |= {topic["id"], donor["id"]}
        bodies = secs[: rng.choice((2, 3))]
        body_words = sum(len(b.split()) for b in bodies) / len(bodies)
        f = rng.uniform(0.4, 0.85)  # boilerplate share of each member's words
        dw = donor["text"].split(" ")
        n_b = min(len(dw), int(body_words * f / (1 - f)))
        head, foot = " ".join(dw[: n_b // 2]), " ".join(dw[n_b // 2 : n_b])
        members = [{"id": f"neg{g}:{i}:{topic['id']}", "text": f"{head}\n\n{b}\n\n{foot}"} for i, b in enumerate(bodies)]
        sh = [shingles(m["text"]) for m in members]
        best = [max(jaccard(sh[i], sh[j]) for j in range(len(sh)) if j != i) for i in range(len(sh))]
        negs.append({"members": [m["id"] for m in members], "max_jaccard": [round(x, 4) for x in best],
                     "boilerplate_share": round(f, 3), "split": heldout.split_of(topic["id"])})
        out += members
    out += [d for d in docs if d["id"] not in used]
    rng.shuffle(out)
    return out, pairs, negs


def write_jsonl(docs: list[dict], folder: Path, parts: int) -> None:
    folder.mkdir(parents=True)
    for p in range(parts):
        with open(folder / f"part-{p:02d}.jsonl", "w") as f:
            for d in docs[p::parts]:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")


def run_fmforge(inp: Path, work: Path, workers: int) -> set[str]:
    from fmforge.config import DataConfig
    from fmforge.data.collect import collect
    from fmforge.data.documents import read_docs
    from fmforge.data.prepare import prepare

    off = {"enabled": False}
    cfg = DataConfig(languages=[], pii=[], dedup_exact=False, min_chars=0, gopher=off, repetition=off, c4=off,
                     workers=workers)
    collect([str(p) for p in sorted(inp.glob("*.jsonl"))], ["*"], work / "raw")
    prepare(work / "raw", work / "out", cfg)
    return {json.loads(d["meta"])["id"] for d in read_docs(work / "out", columns=["meta"])}


def _read(folder: str, data, rank: int = 0, world_size: int = 1):
    """datatrove pipeline step: the documents of this rank's JSONL files (the stdlib json,
    so that datatrove's orjson-based reader is not needed)."""
    from datatrove.data import Document

    for p in sorted(Path(folder).glob("*.jsonl"))[rank::world_size]:
        with open(p) as f:
            for line in f:
                d = json.loads(line)
                yield Document(text=d["text"], id=d["id"])


def _write_ids(folder: str, data, rank: int = 0, world_size: int = 1):
    """datatrove pipeline step: the ids that reach it, one file per rank."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / f"{rank:05d}.ids", "w") as f:
        for doc in data:
            f.write(doc.id + "\n")
    yield from ()


def run_datatrove(inp: Path, work: Path, workers: int, tasks: int) -> set[str]:
    from functools import partial

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter)
    from datatrove.utils.hashing import HashConfig

    # sha1, not xxhash: datatrove passes str to xxhash, which xxhash 4 refuses (TypeError)
    cfg = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"), num_buckets=14, hashes_per_bucket=8, n_grams=5)

    def run(name, pipeline, n):
        LocalPipelineExecutor(pipeline=pipeline, tasks=n, workers=workers, logging_dir=str(work / "logs" / name)).run()

    read = partial(_read, str(inp))
    run("sig", [read, MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg)], tasks)
    run("buckets", [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                        config=cfg)], cfg.num_buckets)
    run("cluster", [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"),
                                        config=cfg)], 1)
    run("filter", [read, MinhashDedupFilter(input_folder=str(work / "remove")),
                   partial(_write_ids, str(work / "kept"))], tasks)
    return {line for p in (work / "kept").glob("*.ids") for line in p.read_text().split("\n") if line}


def score(kept: set[str], docs: list[dict], pairs: list[dict], negs: list[dict], sh: dict) -> dict:
    """Recall, precision and hard-negative removals per bin and split (see the module doc)."""
    ids = [d["id"] for d in docs]
    removed = [i for i in ids if i not in kept]
    partner = {}
    for p in pairs:
        partner[p["original"]], partner[p["copy"]] = p, p
    neg_of = {m: (g, k) for g in negs for k, m in enumerate(g["members"])}
    kept_list = [i for i in ids if i in kept]
    split_of = {m: g["split"] for g in negs for m in g["members"]} | {
        x: p["split"] for p in pairs for x in (p["original"], p["copy"])}
    tp, fp, natural, fp_docs, nat_docs = {}, {}, {}, [], []
    for r in removed:
        p = partner.get(r)
        sp = split_of.get(r, heldout.split_of(r))
        if p is not None and (p["copy"] if r == p["original"] else p["original"]) in kept:
            tp[(p["bin"], sp)] = tp.get((p["bin"], sp), 0) + 1
            continue
        ev = max((jaccard(sh[r], sh[k]) for k in kept_list), default=0.0)  # the best reason to remove it
        b = bin_of(ev)
        if p is None and r not in neg_of and ev >= BINS[0]:  # a near-duplicate the corpus already held
            tp[(b, sp)] = tp.get((b, sp), 0) + 1
            natural[(b, sp)] = natural.get((b, sp), 0) + 1
            nat_docs.append({"id": r, "best_jaccard_with_kept": round(ev, 4)})
            continue
        fp[(b, sp)] = fp.get((b, sp), 0) + 1
        fp_docs.append({"id": r, "best_jaccard_with_kept": round(ev, 4), "hard_negative": r in neg_of})
    out = {}
    for sp in ("dev", "test", "all"):
        rows = {}
        for b in [f"{lo:.2f}" for lo in BINS] + ["<0.50", ">=0.95"]:
            ps = [p for p in pairs if p["bin"] == b and sp in ("all", p["split"])]
            t = sum(v for (bb, s), v in tp.items() if bb == b and sp in ("all", s))
            f = sum(v for (bb, s), v in fp.items() if bb == b and sp in ("all", s))
            hn = [(m, j) for g in negs if sp in ("all", g["split"]) for m, j in zip(g["members"], g["max_jaccard"])
                  if bin_of(j) == b]
            row = {}
            if ps:
                row["pairs"] = len(ps)
                row["recall"] = round(sum((p["original"] in kept) + (p["copy"] in kept) == 1 for p in ps) / len(ps), 4)
            if t + f:
                row.update(removed=t + f, precision=round(t / (t + f), 4))
            nat = sum(v for (bb, s), v in natural.items() if bb == b and sp in ("all", s))
            if nat:
                row["natural_removed"] = nat
            if hn:
                row.update(hard_negatives=len(hn), hard_negatives_removed=sum(m not in kept for m, _ in hn))
            if row:
                rows[b] = row
        ps = [p for p in pairs if sp in ("all", p["split"])]
        t = sum(v for (_, s), v in tp.items() if sp in ("all", s))
        f = sum(v for (_, s), v in fp.items() if sp in ("all", s))
        hn = [m for g in negs if sp in ("all", g["split"]) for m in g["members"]]
        out[sp] = {"bins": rows, "pairs": len(ps),
                   "recall": round(sum((p["original"] in kept) + (p["copy"] in kept) == 1 for p in ps) / max(1, len(ps)), 4),
                   "removed": t + f, "precision": round(t / max(1, t + f), 4),
                   "natural_removed": sum(v for (_, s), v in natural.items() if sp in ("all", s)),
                   "hard_negatives": len(hn), "hard_negatives_removed": sum(m not in kept for m in hn)}
    out["false_removals"] = sorted(fp_docs, key=lambda x: -x["best_jaccard_with_kept"])[:50]
    out["natural_removals"] = sorted(nat_docs, key=lambda x: -x["best_jaccard_with_kept"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", default="wikitext,peps", help=f"held-out corpora: {','.join(heldout.LOADERS)}")
    ap.add_argument("--per-bin", type=int, default=40, help="planted pairs per Jaccard bin (dev + test)")
    ap.add_argument("--groups", type=int, default=60, help="hard-negative groups")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shared", type=Path, default=heldout.SHARED, help="the shared data folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fmforge-bench-neardup"))
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/near_dup-DATE.json)")
    args = ap.parse_args()
    header = provenance(args, peers=("datatrove", "spacy", "numpy"))
    try:  # fail early when the peer is missing (datatrove's English word split is spaCy's)
        import datatrove  # noqa: F401
        import spacy  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"near_dup needs the bench extra (datatrove, spacy): {e}")

    base = [d for s in args.sources.split(",") for d in heldout.LOADERS[s](args.shared)]
    t0 = time.perf_counter()
    docs, pairs, negs = build(base, args.per_bin, args.groups, random.Random(args.seed))
    print(f"corpus {len(docs)} docs ({sum(len(d['text']) for d in docs) / 1e6:.1f} MB), {len(pairs)} planted pairs, "
          f"{sum(len(g['members']) for g in negs)} hard negatives in {len(negs)} groups "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    shutil.rmtree(args.work, ignore_errors=True)
    tasks = max(4, 2 * args.workers)
    write_jsonl(docs, args.work / "input", tasks)
    sh = {d["id"]: shingles(d["text"]) for d in docs}

    result = {"corpus": {"sources": args.sources.split(","), "base_docs": len(base), "base_digest": heldout.digest(base),
                         "docs": len(docs), "planted_pairs": len(pairs), "per_bin_requested": args.per_bin,
                         "hard_negative_groups": len(negs), "hard_negative_docs": sum(len(g["members"]) for g in negs),
                         "bins": "[lo, lo + 0.05), lower edges " + ", ".join(f"{b:.2f}" for b in BINS),
                         "shingles": "fmforge word 5-grams (fmforge.data.text.words, lower-cased)"}}
    for name, fn in (("fmforge", lambda: run_fmforge(args.work / "input", args.work / "fm", args.workers)),
                     ("datatrove", lambda: run_datatrove(args.work / "input", args.work / "dt", args.workers, tasks))):
        t = time.perf_counter()
        kept = fn()
        secs = time.perf_counter() - t
        result[name] = {"seconds": round(secs, 2), "kept": len(kept), **score(kept, docs, pairs, negs, sh)}
        a = result[name]["all"]
        print(f"{name}: {secs:.1f} s, recall {a['recall']}, precision {a['precision']}, hard negatives removed "
              f"{a['hard_negatives_removed']}/{a['hard_negatives']}", flush=True)
        for b, row in a["bins"].items():
            print(f"  {b}: {row}", flush=True)
    result["fmforge"]["settings"] = "128 permutations, 16 bands x 8 rows, verify estimated Jaccard >= 0.75 (shipped)"
    result["datatrove"]["settings"] = "FineWeb: 64-bit hashes (sha1: its xxhash path fails on xxhash 4), 14 buckets x 8 hashes, 5-grams"
    result["pairs"] = pairs
    result["hard_negative_groups"] = negs
    path = write_result("near_dup", header, result, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
