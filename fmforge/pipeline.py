"""Run the stages of a recipe in order, skipping those whose outputs are up to date.

Each stage writes its outputs to `runs/<name>/<stage>/` and, last, a `stage.json` with
the hash of everything it depends on (its recipe sections, the hashes of the stages it
reads, and a fingerprint of its raw inputs). A stage whose recorded hash matches is
skipped; `force=True` redoes it. Since `stage.json` is written only after the outputs,
a stage killed half-way is redone.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fmforge import __version__
from fmforge.config import Recipe

STAGES = ["collect", "prepare", "tokenizer", "train", "eval", "sample"]


@dataclass
class StageRun:
    name: str
    skipped: bool
    seconds: float
    summary: dict = field(default_factory=dict)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_fingerprint(sources: list[str], include: list[str]) -> list:
    """Cheap fingerprint of raw inputs: path, size and mtime of every file (no reading)."""
    from fmforge.data.collect import stdlib_root

    out = []
    for s in sources:
        root = stdlib_root() if s == "stdlib" else Path(s)
        if root.is_file():
            st = root.stat()
            out.append([str(root), st.st_size, st.st_mtime_ns])
        elif root.is_dir():
            h = hashlib.sha256()
            for p in sorted(root.rglob("*")):
                if p.is_file() and "site-packages" not in p.parts:
                    st = p.stat()
                    h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
            out.append([str(root), h.hexdigest()])
        else:
            out.append([s, "missing"])
    return out


class Pipeline:
    def __init__(self, recipe: Recipe, force: bool = False, verbose: bool = True):
        self.recipe, self.force, self.verbose = recipe, force, verbose
        self.dir = recipe.run_dir
        self.hashes: dict[str, str] = {}
        self.runs: list[StageRun] = []
        self.is_main = int(os.environ.get("RANK", "0")) == 0

    def stage_dir(self, name: str) -> Path:
        return self.dir / name

    def _deps(self, name: str) -> dict:
        r = self.recipe
        deps = {
            "collect": lambda: {"data": {k: v for k, v in r.section_hash("data")["data"].items()
                                         if k in ("sources", "include", "text_field")},
                                "inputs": source_fingerprint(r.data.sources, r.data.include)},
            "prepare": lambda: {"collect": self.hashes["collect"], **r.section_hash("data")},
            "tokenizer": lambda: {"prepare": self.hashes["prepare"], **r.section_hash("tokenizer"),
                                  "split": [r.data.val_fraction, r.data.split_seed]},
            "train": lambda: {"tokenizer": self.hashes["tokenizer"], **r.section_hash("model", "train")},
            "eval": lambda: {"train": self.hashes["train"], **r.section_hash("eval")},
            "sample": lambda: {"train": self.hashes["train"], **r.section_hash("eval")},
        }[name]()
        return {"fmforge": __version__, "stage": name, **deps}

    def up_to_date(self, name: str) -> bool:
        marker = self.stage_dir(name) / "stage.json"
        if not marker.exists():
            return False
        try:
            return json.loads(marker.read_text()).get("hash") == self.hashes[name]
        except (json.JSONDecodeError, OSError):
            return False

    def run_stage(self, name: str, fn: Callable[[Path], dict]) -> StageRun:
        self.hashes[name] = _hash(self._deps(name))
        out = self.stage_dir(name)
        marker = out / "stage.json"
        if not self.is_main:  # under torchrun: rank 0 runs the stages, the others train with it
            return self._follow(name, fn)
        if not self.force and self.up_to_date(name):
            summary = json.loads(marker.read_text())["summary"]
            run = StageRun(name, True, 0.0, summary)
            self._say(f"[{name}] up to date, skipped")
        else:
            if marker.exists():
                marker.unlink()
            # An interrupted train stage of the same inputs keeps its checkpoints to resume
            # from; any other stage, or another recipe, starts from an empty folder.
            started = out / "started.json"
            same = started.exists() and json.loads(started.read_text()).get("hash") == self.hashes[name]
            if out.exists() and not (name == "train" and same and not self.force):
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            started.write_text(json.dumps({"hash": self.hashes[name]}))
            self._say(f"[{name}] running")
            t0 = time.perf_counter()
            summary = fn(out)
            secs = time.perf_counter() - t0
            record = {"hash": self.hashes[name], "seconds": secs, "summary": summary,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            tmp = out / ".stage.json.tmp"
            tmp.write_text(json.dumps(record, indent=2, default=str))
            os.replace(tmp, marker)
            run = StageRun(name, False, secs, summary)
            self._say(f"[{name}] done in {secs:.1f}s")
        self.runs.append(run)
        return run

    def _follow(self, name: str, fn: Callable[[Path], dict]) -> StageRun:
        """A rank other than 0: take part in training, wait for rank 0's data stages,
        leave evaluation to rank 0."""
        if name == "train":
            return StageRun(name, False, 0.0, fn(self.stage_dir(name)))
        if name in ("eval", "sample"):
            return StageRun(name, True, 0.0, {})
        deadline = time.time() + 24 * 3600
        while not self.up_to_date(name):
            if time.time() > deadline:
                raise TimeoutError(f"rank {os.environ.get('RANK')}: waited a day for rank 0's {name} stage")
            time.sleep(2)
        summary = json.loads((self.stage_dir(name) / "stage.json").read_text())["summary"]
        return StageRun(name, True, 0.0, summary)

    def _say(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    # ------------------------------------------------------------- the stages

    def collect(self) -> StageRun:
        from fmforge.data.collect import collect

        def fn(out: Path) -> dict:
            d = self.recipe.data
            s = collect(d.sources, d.include, out, text_field=d.text_field, strict=d.strict)
            return {"docs": s.docs, "bytes": s.bytes, "skipped": s.skipped}

        return self.run_stage("collect", fn)

    def prepare(self) -> StageRun:
        from fmforge.data.datacard import summary
        from fmforge.data.prepare import prepare

        def fn(out: Path) -> dict:  # the data card summary (full card: prepare/datacard.md)
            s = summary(prepare(self.stage_dir("collect"), out, self.recipe.data))
            if not s["docs_out"]:
                reasons = ", ".join(f"{k}: {v}" for k, v in sorted(s["removed"].items(), key=lambda kv: -kv[1]))
                raise ValueError(f"prepare kept none of the {s['docs_in']} collected documents ({reasons or 'none collected'}); "
                                 f"see {out / 'datacard.md'} for examples of each reason")
            return s

        return self.run_stage("prepare", fn)

    def tokenizer(self) -> StageRun:
        from fmforge.tokenizer.bpe import load, save, train_bpe
        from fmforge.tokenizer.encode import encode_corpus, is_validation
        from fmforge.tokenizer.sample import sample_docs

        r = self.recipe

        def fn(out: Path) -> dict:
            docs = self.stage_dir("prepare")
            t0 = time.perf_counter()
            if r.tokenizer.path:
                tok = load(Path(r.tokenizer.path))
                save(tok, out)
            else:  # train on training documents only: validation text stays unseen
                texts = sample_docs(docs, r.tokenizer.sample_bytes,
                                    exclude=lambda i: is_validation(i, r.data.val_fraction, r.data.split_seed))
                tok = train_bpe(texts, r.tokenizer, out)
            t_train = time.perf_counter() - t0
            s = encode_corpus(tok, docs, out / "shards", r.data.val_fraction, r.data.split_seed,
                              workers=r.tokenizer.workers, chunk_bytes=r.tokenizer.chunk_bytes, verbose=self.verbose)
            return {"vocab_size": tok.get_vocab_size(), "train_seconds": t_train,
                    "encode_seconds": time.perf_counter() - t0 - t_train, **s.__dict__,
                    "bytes_per_token": s.bytes / max(1, s.train_tokens + s.val_tokens - s.train_docs - s.val_docs)}

        return self.run_stage("tokenizer", fn)

    def train(self, resume: bool = True) -> StageRun:
        from fmforge.train.trainer import train

        def fn(out: Path) -> dict:
            res = train(self.recipe, self.stage_dir("tokenizer") / "shards", out, resume=resume, verbose=self.verbose)
            return res.to_dict()

        return self.run_stage("train", fn)

    def eval(self) -> StageRun:
        from fmforge.eval.run import evaluate_run

        return self.run_stage("eval", lambda out: evaluate_run(self.recipe, self.dir, out))

    def sample(self) -> StageRun:
        from fmforge.eval.run import sample_run

        return self.run_stage("sample", lambda out: sample_run(self.recipe, self.dir, out))

    def run_all(self) -> dict:
        t0 = time.perf_counter()
        for name in STAGES:
            getattr(self, name)()
        report = build_report(self.recipe, self.runs, time.perf_counter() - t0)
        if self.is_main:
            write_report(report, self.dir)
        return report


def build_report(recipe: Recipe, runs: list[StageRun], seconds: float) -> dict:
    by = {r.name: r.summary for r in runs}
    train = by.get("train", {})
    ev = by.get("eval", {})
    tok = by.get("tokenizer", {})
    prep = by.get("prepare", {})
    return {
        "recipe": recipe.name,
        "seconds": seconds,
        "stages": {r.name: {"skipped": r.skipped, "seconds": r.seconds} for r in runs},
        "data": {"docs_collected": by.get("collect", {}).get("docs"), "docs_kept": prep.get("docs_out"),
                 "bytes_collected": prep.get("bytes_in"), "bytes_kept": prep.get("bytes_out"),
                 "removed": prep.get("removed"), "pii": prep.get("pii"),
                 "contaminated_docs": prep.get("contaminated_docs"), "languages": prep.get("languages"),
                 "datacard": str(recipe.run_dir / "prepare" / "datacard.md"),
                 "train_docs": tok.get("train_docs"), "val_docs": tok.get("val_docs")},
        "tokenizer_vocab": tok.get("vocab_size"),
        "bytes_per_token": tok.get("bytes_per_token"),
        "params": train.get("params"),
        "tokens_trained": train.get("tokens"),
        "train_seconds": train.get("seconds"),
        "tokens_per_s": train.get("tokens_per_s"),
        "mfu": train.get("mfu"),
        "cost": ev.get("cost"),
        "val_loss": ev.get("val_loss"),
        "val_bpb": ev.get("val_bpb"),
        "gzip_bpb": ev.get("gzip_bpb"),
        "xz_bpb": ev.get("xz_bpb"),
        "val_docs_scored": ev.get("docs"),
        "prompt": by.get("sample", {}).get("prompt"),
        "sample": by.get("sample", {}).get("sample"),
    }


def write_report(report: dict, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, run_dir / "report.json")
    (run_dir / "report.md").write_text(report_markdown(report))


def _f(x, fmt="{:.4f}") -> str:
    return "—" if x is None else fmt.format(x) if isinstance(x, (int, float)) else str(x)


def data_card_rows(d: dict) -> list[tuple[str, str]]:
    """The data card summary: bytes kept, top removal reasons, PII and contamination."""
    rows = []
    if d.get("bytes_kept") is not None and d.get("bytes_collected"):
        rows.append(("data MB (collected → kept)", f"{d['bytes_collected'] / 1e6:,.1f} → {d['bytes_kept'] / 1e6:,.1f}"))
    removed = d.get("removed") or {}
    if removed:
        top = sorted(removed.items(), key=lambda kv: -kv[1])
        text = ", ".join(f"{k} {v:,}" for k, v in top[:5]) + (f", +{len(top) - 5} more" if len(top) > 5 else "")
        rows.append(("removed (reason docs)", text))
    if d.get("pii"):
        rows.append(("PII redacted", ", ".join(f"{k} {v:,}" for k, v in d["pii"].items())))
    if d.get("contaminated_docs"):
        rows.append(("contaminated documents", f"{d['contaminated_docs']:,}"))
    if d.get("datacard"):
        rows.append(("data card", d["datacard"]))
    return rows


def report_rows(report: dict) -> list[tuple[str, str]]:
    d = report["data"]
    rows = [
        ("documents (collected → kept)", f"{_f(d['docs_collected'], '{:,}')} → {_f(d['docs_kept'], '{:,}')}"),
        *data_card_rows(d),
        ("train / val documents", f"{_f(d['train_docs'], '{:,}')} / {_f(d['val_docs'], '{:,}')}"),
        ("tokenizer vocab", _f(report["tokenizer_vocab"], "{:,}")),
        ("bytes per token", _f(report["bytes_per_token"], "{:.2f}")),
        ("params", _f(report["params"], "{:,}")),
        ("tokens trained", _f(report["tokens_trained"], "{:,}")),
        ("train time (s)", _f(report["train_seconds"], "{:.1f}")),
        ("tokens/s", _f(report["tokens_per_s"], "{:,.0f}")),
        ("val loss (nats/token)", _f(report["val_loss"])),
        ("val bits/byte (model)", _f(report["val_bpb"])),
        ("val bits/byte (gzip -9)", _f(report["gzip_bpb"])),
        ("val bits/byte (xz -9e)", _f(report["xz_bpb"])),
    ]
    if report.get("cost"):
        c = report["cost"]
        rows.append(("cost", f"{_f(c.get('device_hours'), '{:.3f}')} device-h, ${_f(c.get('usd'), '{:.4f}')}"))
    rows += [(f"stage {k}", "skipped" if v["skipped"] else f"{v['seconds']:.1f}s") for k, v in report["stages"].items()]
    rows.append(("total time (s)", f"{report['seconds']:.1f}"))
    return rows


def report_markdown(report: dict) -> str:
    lines = [f"# fmforge run: {report['recipe']}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report_rows(report)]
    lines += ["", f"## Sample", "", "```python", (report.get("prompt") or "") + (report.get("sample") or ""), "```", ""]
    return "\n".join(lines)
