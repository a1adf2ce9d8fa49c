"""Tokenizer benchmark on the shared pretrain data (books, Wikipedia, PEPs, Shakespeare: ~100 MB).

Measures, in one run on this machine:
  - training a byte-level BPE (HF tokenizers) on the corpus less a held-out part (documents
    whose id hashes into ``--heldout`` of the buckets): seconds and MB/s;
  - then, in ``--repeats`` rounds (every system once per round, so that each ratio compares
    runs made under the same load), on the whole corpus:
      * HF tokenizers in memory, ``encode_batch`` and ``encode_batch_fast`` (no offsets), in
        batches of ``--hf-batch`` documents, parallelism on (rayon, every core);
      * tiktoken built from the same merges, in memory: ``encode_ordinary`` one thread, and
        ``encode_ordinary_batch`` with ``--tiktoken-threads`` threads;
      * fmforge's ``encode_corpus`` end to end (read Parquet, split, encode, write shards to
        disk) with each of ``--workers`` processes (wall time and CPU seconds);
    each system's ids are taken as lists (HF: ``Encoding.ids``), what a caller gets;
  - per ratio (fmforge at each worker count vs each peer; fmforge's scaling over 1 worker)
    its mean, min and max over the rounds, of wall-clock MB/s and of MB per CPU-second;
  - that fmforge's ids equal HF's (``encode_batch``, computed apart, untimed) on every
    document, counted apart for documents the BPE was trained on, the held-out ones, and
    WikiText-2 (valid + test articles: text from outside the pretrain corpus) encoded end
    to end the same way; and that every run's shards are byte-identical.
Writes benchmarks/results/tokenizer-<date>.json. Target (issue 5): end to end >= 2.5x
``encode_batch``.

    .venv/bin/python benchmarks/tokenizer.py [--max-mb 20] [--repeats 3] [--workers 1,16]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT.parent / "shared" / "data" / "pretrain"
SOURCES = ["books.jsonl.zst", "enwiki.jsonl.zst", "peps.tar.gz", "tinyshakespeare.txt"]
VAL_FRACTION, SPLIT_SEED = 0.05, 0  # encode's train/val split (the shards' layout)
HOLDOUT_SEED = 0xB14  # the tokenizer's held-out documents: independent of the split above


def live_children_cpu() -> float:
    """User + system CPU of this process's live children and of the children they reaped.
    fmforge's encode workers are forks of its fork server (fmforge.workers), a child that
    lives on: their CPU never reaches this process's RUSAGE_CHILDREN, but the server's."""
    me, tick, total = str(os.getpid()), os.sysconf("SC_CLK_TCK"), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()  # after the command name: state, ppid, ...
        except (OSError, IndexError):
            continue  # ended meanwhile
        if f[1] == me:
            total += sum(int(x) for x in f[11:15]) / tick  # utime, stime, cutime, cstime
    return total


def cpu_seconds() -> float:
    """User + system CPU of this process, its finished children and its live ones' trees."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime + live_children_cpu()


def timed(fn):
    load, t, c = os.getloadavg()[0], time.perf_counter(), cpu_seconds()
    out = fn()
    return out, {"seconds": time.perf_counter() - t, "cpu_seconds": cpu_seconds() - c, "loadavg_before": load}


def spread(xs: list[float]) -> dict:
    return {"mean": float(np.mean(xs)), "min": float(min(xs)), "max": float(max(xs)), "runs": [float(x) for x in xs]}


def prepare_corpus(work: Path, sources: list[str], max_mb: float | None) -> Path:
    """The pretrain files as a prepared-documents Parquet folder (the encoder's input)."""
    from fmforge.data.collect import collect
    from fmforge.data.documents import read_docs, write_docs

    raw = work / "collected"
    collect([str(PRETRAIN / name) for name in sources], ["*"], raw)
    if not max_mb:
        return raw
    # every k-th document across the whole corpus, so that a subset keeps every source; a
    # document over a quarter of the budget (a whole book) would crowd the others out
    sizes = [len(d["text"].encode()) for d in read_docs(raw, columns=["text"])]
    cap, k = max_mb * 1e6 / 4, max(1, int(sum(sizes) / (max_mb * 1e6)))
    docs, total = [], 0
    for i, d in enumerate(read_docs(raw)):
        if i % k == 0 and sizes[i] <= cap:
            docs.append(d)
            total += sizes[i]
            if total >= max_mb * 1e6:
                break
    write_docs(docs, work / "subset")
    return work / "subset"


def shard_docs(shard_dir: Path) -> dict[str, list[np.ndarray]]:
    """Each document's ids in the shards, per split, in corpus order (boundary token dropped)."""
    from fmforge.tokenizer.shards import open_split

    return {sp: [s.doc(i)[1:] for s in open_split(shard_dir, sp) for i in range(len(s))] for sp in ("train", "val")}


def mismatches(shard_dir: Path, doc_ids: list[str], ref: list[np.ndarray]) -> list[int]:
    """Indices of the documents whose ids in `shard_dir` differ from `ref` (or are missing
    there); a shard document left over after the last reference one is counted too (-1)."""
    from fmforge.tokenizer.encode import is_validation

    shards = shard_docs(shard_dir)
    pos = {"train": 0, "val": 0}
    bad = []
    for k, (doc_id, r) in enumerate(zip(doc_ids, ref)):
        sp = "val" if is_validation(doc_id, VAL_FRACTION, SPLIT_SEED) else "train"
        got = shards[sp][pos[sp]] if pos[sp] < len(shards[sp]) else None
        pos[sp] += 1
        if got is None or not np.array_equal(got, r):
            bad.append(k)
    bad += [-1] * sum(max(0, len(shards[sp]) - pos[sp]) for sp in shards)
    return bad


def hf_reference(tok, texts: list[str], batch: int) -> list[np.ndarray]:
    """HF `encode_batch` ids of every text (the reference; not timed)."""
    out = []
    for i in range(0, len(texts), batch):
        out += [np.asarray(e.ids, dtype=np.uint32) for e in tok.encode_batch(texts[i : i + batch], add_special_tokens=False)]
    return out


def same_bytes(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.bin"))
    return names == sorted(p.name for p in b.glob("*.bin")) and all((a / n).read_bytes() == (b / n).read_bytes()
                                                                     for n in names)


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-mb", type=float, default=None, help="use a subset of about this many MB (quick check)")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--sources", default=",".join(SOURCES), help="files of shared/data/pretrain to use")
    ap.add_argument("--repeats", type=int, default=3, help="rounds: every timed system runs once per round")
    ap.add_argument("--workers", default=f"1,{cores}" if cores > 1 else "1",
                    help="comma list of fmforge encode worker counts (default 1 and every usable core)")
    ap.add_argument("--hf-batch", type=int, default=256, help="documents per HF encode_batch call")
    ap.add_argument("--tiktoken-threads", type=int, default=cores, help="threads of tiktoken's encode_ordinary_batch")
    ap.add_argument("--heldout", type=float, default=0.1, help="share of documents (by id hash) kept out of BPE training")
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/tokenizer-DATE.json)")
    args = ap.parse_args()
    # HF tokenizers' rayon pool is on unless told otherwise: say so (it reads this at each call)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    if not workers or min(workers) < 1 or args.repeats < 1:
        ap.error("--workers needs positive counts and --repeats at least 1")
    header = provenance(args, peers=("tokenizers", "tiktoken"))
    if not (PRETRAIN / "books.jsonl.zst").exists():
        raise SystemExit(f"shared data not found at {PRETRAIN}")

    import heldout  # benchmarks/heldout.py: WikiText-2 as articles
    import tiktoken  # noqa: F401  (import cost outside the timings)

    from fmforge.config import TokenizerConfig
    from fmforge.data.documents import read_docs, write_docs
    from fmforge.tokenizer.bpe import load, train_bpe
    from fmforge.tokenizer.encode import encode_corpus, is_validation
    from fmforge.tokenizer.fast import Encoder
    from fmforge.tokenizer.sample import sample_docs

    def held_out(doc_id: str) -> bool:
        return is_validation(doc_id, args.heldout, HOLDOUT_SEED)

    work = Path(tempfile.mkdtemp(prefix="fmforge-tokbench-"))
    try:
        sources = args.sources.split(",")
        docs_dir = prepare_corpus(work, sources, args.max_mb)
        rows = list(read_docs(docs_dir, columns=["id", "text"]))
        texts, ids = [d["text"] for d in rows], [d["id"] for d in rows]
        del rows
        sizes = [len(t.encode()) for t in texts]
        mb = sum(sizes) / 1e6
        out_mask = [held_out(i) for i in ids]
        train_mb = sum(s for s, h in zip(sizes, out_mask) if not h) / 1e6
        print(f"corpus: {len(texts)} documents, {mb:.1f} MB; {sum(out_mask)} held out of BPE training", flush=True)
        figures: dict = {"corpus": {"docs": len(texts), "mb": mb, "sources": sources,
                                    "heldout_docs": sum(out_mask), "heldout_mb": mb - train_mb}}

        cfg = TokenizerConfig(vocab_size=args.vocab, sample_bytes=200_000_000)
        _, t = timed(lambda: train_bpe(sample_docs(docs_dir, cfg.sample_bytes, exclude=held_out), cfg, work / "tok"))
        figures["train"] = {"vocab": args.vocab, "sample_mb": train_mb, **t, "mb_per_s": train_mb / t["seconds"],
                            "excluded": f"documents with xxh64(id, seed={HOLDOUT_SEED}) in the first {args.heldout:.0%} of buckets"}
        print("train", figures["train"], flush=True)

        tok = load(work / "tok")
        tok.encode_special_tokens = True  # document text never yields special tokens (as fmforge encodes it)
        ref = hf_reference(tok, texts, args.hf_batch)
        enc = Encoder.from_path(work / "tok")
        tt = enc.tiktoken
        if tt is None:
            raise SystemExit(f"fmforge's fast encoder is off for this tokenizer: {enc.why_not}")
        b = args.hf_batch

        def hf(call):
            def run():
                for i in range(0, len(texts), b):
                    ids_ = [e.ids for e in call(texts[i : i + b], add_special_tokens=False)]  # noqa: F841
            return run

        def tiktoken_one():
            for x in texts:
                tt.encode_ordinary(x)

        def tiktoken_threads():  # in HF's batches: the ids of one batch at a time in memory, as for HF
            for i in range(0, len(texts), b):
                tt.encode_ordinary_batch(texts[i : i + b], num_threads=args.tiktoken_threads)

        systems = {"hf_encode_batch": hf(tok.encode_batch), "hf_encode_batch_fast": hf(tok.encode_batch_fast),
                   "tiktoken_in_memory_1_thread": tiktoken_one,
                   f"tiktoken_encode_ordinary_batch_{args.tiktoken_threads}_threads": tiktoken_threads}
        runs: dict[str, list[dict]] = {k: [] for k in systems} | {f"fmforge_encode_{w}_workers": [] for w in workers}
        first: dict[int, Path] = {}
        checks = {"runs_byte_identical_to_first": True}
        for r in range(args.repeats):
            for name, fn in systems.items():
                _, t = timed(fn)
                runs[name].append({**t, "mb_per_s": mb / t["seconds"]})
                print(f"round {r} {name}", runs[name][-1], flush=True)
            for w in workers:
                out = work / f"shards-{w}-{r}"
                s, t = timed(lambda: encode_corpus(work / "tok", docs_dir, out, VAL_FRACTION, SPLIT_SEED, workers=w))
                runs[f"fmforge_encode_{w}_workers"].append({**t, "mb_per_s": mb / t["seconds"], "encoder": s.encoder,
                                                            "chunks": s.chunks, "tokens": s.train_tokens + s.val_tokens})
                print(f"round {r} fmforge {w} workers", runs[f"fmforge_encode_{w}_workers"][-1], flush=True)
                if w not in first:
                    first[w] = out
                    bad = mismatches(out, ids, ref)
                    checks[f"{w}_workers"] = {"mismatched_docs": len(bad), "first_mismatched": [ids[k] if k >= 0 else
                                                                                               "(extra)" for k in bad[:5]]}
                    if w == workers[0]:  # the mismatches, split by whether the BPE saw the document
                        checks["trained_on"] = {"docs": sum(not h for h in out_mask),
                                                "mismatched_docs": sum(k >= 0 and not out_mask[k] for k in bad)}
                        checks["heldout"] = {"docs": sum(out_mask), "mismatched_docs": sum(k >= 0 and out_mask[k] for k in bad)}
                else:
                    checks["runs_byte_identical_to_first"] &= same_bytes(first[workers[0]], out)
                    shutil.rmtree(out)
        checks["workers_byte_identical"] = all(same_bytes(first[workers[0]], p) for p in first.values())

        # text from outside the pretrain corpus, end to end the same way
        wiki = heldout.wikitext(PRETRAIN.parent)
        write_docs(wiki, work / "wikitext")
        s = encode_corpus(work / "tok", work / "wikitext", work / "shards-wikitext", VAL_FRACTION, SPLIT_SEED,
                          workers=max(workers))
        wiki_texts = [d["text"] for d in read_docs(work / "wikitext", columns=["text"])]
        wiki_ids = [d["id"] for d in read_docs(work / "wikitext", columns=["id"])]
        bad = mismatches(work / "shards-wikitext", wiki_ids, hf_reference(tok, wiki_texts, b))
        checks["wikitext2"] = {"docs": len(wiki_texts), "mb": sum(len(x.encode()) for x in wiki_texts) / 1e6,
                               "encoder": s.encoder, "mismatched_docs": len(bad)}
        figures["identical_ids"] = checks
        print("identical ids", checks, flush=True)

        for name, rs in runs.items():
            figures[name] = {"mb_per_s": spread([x["mb_per_s"] for x in rs]),
                             "mb_per_cpu_s": spread([mb / x["cpu_seconds"] for x in rs]),
                             "seconds": spread([x["seconds"] for x in rs]), "runs": rs}
        figures["hf_encode_batch"]["threads"] = figures["hf_encode_batch_fast"]["threads"] = \
            f"rayon, {os.environ.get('RAYON_NUM_THREADS') or 'all'} cores, TOKENIZERS_PARALLELISM=true"
        def ratios_of(rate: dict[str, list[float]]) -> dict:
            out = {}
            for w in workers:
                fm = rate[f"fmforge_encode_{w}_workers"]
                for peer in systems:
                    out[f"fmforge_{w}_workers_vs_{peer}"] = spread([a / p for a, p in zip(fm, rate[peer])])
                if w != 1 and 1 in workers:
                    out[f"scaling_{w}_vs_1_workers"] = spread([a / p for a, p in zip(fm, rate["fmforge_encode_1_workers"])])
            return out

        # wall-clock throughput (what a user waits for), and per CPU-second (the work each does,
        # less sensitive to what else runs on the machine; threads and finished workers included)
        ratios = ratios_of({k: [x["mb_per_s"] for x in v] for k, v in runs.items()})
        figures["ratios"] = ratios
        figures["ratios_per_cpu_second"] = ratios_of({k: [mb / x["cpu_seconds"] for x in v] for k, v in runs.items()})
        top = ratios[f"fmforge_{max(workers)}_workers_vs_hf_encode_batch"]
        mismatched = sum(v["mismatched_docs"] for k, v in checks.items() if k.endswith("_workers") or k == "wikitext2")
        figures["speedup_end_to_end_vs_hf"] = top["mean"]
        figures["target"] = {"speedup_min": 2.5, "vs": "hf_encode_batch", "workers": max(workers),
                             "met": top["min"] >= 2.5 and mismatched == 0 and checks["runs_byte_identical_to_first"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header["hardware"]["note"] = ("cores shared with other sessions: load_avg_1m_before (header) and each run's "
                                  "loadavg_before say how busy the machine was")
    header["hardware"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    path = write_result("tokenizer", header, {"figures": figures}, args.out)
    print(json.dumps({k: figures[k] for k in ("ratios", "identical_ids", "target")}, indent=2))
    print(f"→ {path}")


if __name__ == "__main__":
    main()
