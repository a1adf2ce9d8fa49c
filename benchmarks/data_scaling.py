"""Data stages on many cores: prepare and encode at 1, 4, ... N workers, through the CLI.

The corpus is the shared books + Wikipedia + PEPs (``--shared``), in ``--copies``
perturbed copies: copy k replaces every word at a position whose hash with k falls in a
quarter, so copies share few 5-grams and are not near-duplicates of each other (the
stages do their full work on each copy instead of de-duplicating them away).

For each worker count: ``fmforge data prepare -w N`` and ``fmforge tokenizer encode -j N``
on the same collected input and the same tokenizer, timed as whole commands (start-up
included), with the peak resident memory of the largest process (parent or worker) and
prepare's own phase timings from its stats.json. Checks that every worker count keeps the
same documents (ids in order) and writes byte-identical token shards.

Writes benchmarks/results/data_scaling-<date>.json:
  {"date", "hardware", "commit", "corpus_mb", "results": [{"workers", "prepare_s", "encode_s", ...}]}

  python benchmarks/data_scaling.py --shared ../shared/data/pretrain --copies 4 --workers 1,4,16
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

FILES = ["books.jsonl.zst", "enwiki.jsonl.zst", "peps.tar.gz"]


def cpu_topology() -> dict:
    """Logical CPUs usable, and how many distinct physical cores they are (hardware threads
    share a core: `thread_siblings_list` in sysfs)."""
    cpus = sorted(os.sched_getaffinity(0))
    cores = set()
    for c in cpus:
        p = Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list")
        cores.add(p.read_text().strip() if p.exists() else str(c))
    return {"logical_cpus": len(cpus), "physical_cores": len(cores),
            "hardware_threads": len(cores) < len(cpus)}


CEILING_LOOP = """
import re, time, zlib
text = open(__import__('sys').argv[1]).read()
t0 = time.perf_counter()
for _ in range(3):
    words = re.findall(r"\\w+", text)
    zlib.crc32(" ".join(sorted(set(words))).encode())
print(time.perf_counter() - t0)
"""


def cpu_ceiling(counts: list[int], sample: Path) -> list[dict]:
    """What the machine itself gives N busy processes: each runs the same text-processing
    loop (regex words, set, sort, crc) at the same time; speed-up = N x (time alone) /
    (slowest time among N). Shared caches, memory bandwidth, all-core clocks and hidden
    hardware threads all show here, so the stages' scaling can be read against it."""
    rows, alone = [], None
    for n in counts:
        procs = [subprocess.Popen([sys.executable, "-c", CEILING_LOOP, str(sample)], stdout=subprocess.PIPE, text=True)
                 for _ in range(n)]
        times = [float(p.communicate()[0]) for p in procs]
        alone = alone or max(times)
        rows.append({"processes": n, "slowest_s": round(max(times), 3), "speedup": round(n * alone / max(times), 2)})
    return rows


def perturb(text: str, k: int) -> str:
    if k == 0:
        return text
    words = text.split(" ")
    rng = random.Random(k)
    vocab = words[: 2000] or ["x"]
    for i in range(len(words)):
        if (i * 2654435761 + k * 40503) % 4 == 0:
            words[i] = rng.choice(vocab)
    return " ".join(words)


def build_corpus(shared: Path, copies: int, out: Path) -> tuple[float, int]:
    """JSONL.zst files, one per source and copy; returns (MB of text, documents)."""
    from fmforge.data.collect import CollectStats
    from fmforge.data.readers import iter_file

    out.mkdir(parents=True)
    mb, n = 0.0, 0
    for name in FILES:
        docs = [d["text"] for d in iter_file(shared / name, CollectStats())]
        for k in range(copies):
            path = out / f"{name.split('.')[0]}-copy{k}.jsonl.zst"
            buf = io.StringIO()
            for t in docs:
                t = perturb(t, k)
                mb += len(t.encode()) / 1e6
                n += 1
                buf.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
            path.write_bytes(zstandard.ZstdCompressor(level=3).compress(buf.getvalue().encode()))
    return mb, n


_MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(rc)")


def fmforge(*args: str, env=None) -> tuple[float, float]:
    """Run one CLI command; (seconds, peak RSS in MB of its largest process, parent or
    worker). A small wrapper process runs it, so RUSAGE_CHILDREN covers this command alone."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "fmforge", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    secs = time.perf_counter() - t
    if p.returncode:
        sys.exit(f"fmforge {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    kb = int(p.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return secs, round(kb / 1024, 1)


def ids_digest(folder: Path) -> tuple[str, int]:
    import pyarrow.parquet as pq

    h, n = hashlib.sha256(), 0
    for p in sorted(folder.glob("docs-*.parquet")):
        for i in pq.read_table(p, columns=["id"]).column("id").to_pylist():
            h.update(i.encode())
            n += 1
    return h.hexdigest()[:16], n


def shards_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.bin")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data" / "pretrain")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--workers", default="1,4,16", help="comma-separated worker counts")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fmforge-data-scaling"))
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/data_scaling-DATE.json)")
    a = ap.parse_args()
    header = provenance(a)
    if not (a.shared / FILES[0]).exists():
        sys.exit(f"shared data not found at {a.shared}")
    if a.work.exists():
        shutil.rmtree(a.work)  # our own scratch folder, named by --work
    raw = a.work / "raw"
    mb, n = build_corpus(a.shared, a.copies, raw)
    print(f"corpus: {n:,} documents, {mb:.1f} MB in {a.copies} copies", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the stages under test read all prose languages (Wikipedia/books/PEPs are English anyway)
    common = ["--set", "data.val_fraction=0.01"]
    collect_s, _ = fmforge("data", "collect", str(raw), "--out", str(a.work / "collected"), env=env)
    print(f"collect: {collect_s:.1f} s", flush=True)
    sample = a.work / "ceiling-sample.txt"
    with zstandard.open(a.shared / "enwiki.jsonl.zst", "rt") as f:
        sample.write_text("".join(json.loads(line)["text"] for _, line in zip(range(300), f)))
    ceiling = cpu_ceiling([int(x) for x in a.workers.split(",")], sample)
    print(f"cpu ceiling: {ceiling}", flush=True)
    results, ref = [], None
    for w in [int(x) for x in a.workers.split(",")]:
        prep = a.work / f"prepared-{w}"
        prep_s, prep_rss = fmforge("data", "prepare", str(a.work / "collected"), "--out", str(prep), "-w", str(w),
                                   *common, env=env)
        if ref is None:  # one tokenizer for every worker count, trained on the first output
            fmforge("tokenizer", "train", "--data", str(prep), "--out", str(a.work / "tok"),
                    "--vocab-size", str(a.vocab), "--sample-bytes", str(50_000_000), *common, env=env)
        enc_s, enc_rss = fmforge("tokenizer", "encode", "--tokenizer", str(a.work / "tok"), "--data", str(prep),
                                 "--out", str(a.work / f"shards-{w}"), "-j", str(w), *common, env=env)
        stats = json.loads((prep / "stats.json").read_text())
        enc_stats = json.loads((a.work / f"shards-{w}" / "stats.json").read_text())
        ids, kept = ids_digest(prep)
        shards = shards_digest(a.work / f"shards-{w}")
        row = {"workers": w, "prepare_s": round(prep_s, 2), "encode_s": round(enc_s, 2),
               "prepare_peak_rss_mb": prep_rss, "encode_peak_rss_mb": enc_rss,
               "prepare_phases_s": stats.get("phase_seconds"), "prepare_inside_s": stats.get("seconds"),
               "encode_phases_s": enc_stats.get("phase_seconds"), "encode_worker_cpu_s": enc_stats.get("worker_seconds"),
               "encode_chunks": enc_stats.get("chunks"), "encoder": enc_stats.get("encoder"),
               "docs_kept": kept, "ids_sha": ids, "shards_sha": shards}
        ref = ref or row
        row["prepare_speedup"] = round(ref["prepare_s"] / prep_s, 2)
        row["encode_speedup"] = round(ref["encode_s"] / enc_s, 2)
        row["same_output_as_first"] = ids == ref["ids_sha"] and shards == ref["shards_sha"]
        results.append(row)
        print(f"workers {w:3d}: prepare {prep_s:7.1f} s ({row['prepare_speedup']:.2f}x)  encode {enc_s:6.1f} s "
              f"({row['encode_speedup']:.2f}x)  same output {row['same_output_as_first']}  "
              f"phases {row['prepare_phases_s']} encode {row['encode_phases_s']} {row['encode_worker_cpu_s']}", flush=True)
        shutil.rmtree(prep)
        shutil.rmtree(a.work / f"shards-{w}")
    path = write_result("data_scaling", header, {
        "cpu_topology": cpu_topology(), "cpu_ceiling": ceiling, "corpus_mb": round(mb, 1), "corpus_docs": n, "copies": a.copies,
        "collect_s": round(collect_s, 2),
        "note": "peak RSS: the largest single process (parent or one worker) of each command",
        "results": results}, a.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
