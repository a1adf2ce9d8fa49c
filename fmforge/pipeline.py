"""Run the stages of a recipe in order: the stage contract (docs/stages.md).

Each stage writes to `runs/<name>/<stage>/`. What decides whether it runs again is
declared here, once, per stage (`stage_settings`): the recipe fields that change its
result, the hashes of the stages it reads and, for collect, a fingerprint of the raw
inputs. Fields that change only how a stage runs (workers, logging, the sample's
temperature for eval, ...) re-run nothing.

- up to date (`stage.json` holds the same hash): skipped;
- interrupted with the same settings (`started.json` holds the same hash): the folder is
  kept and the stage resumes itself (prepare's tasks, encode's chunks, training's
  checkpoints);
- training whose identity is unchanged but whose budget changed, with `resume`: it
  continues from its newest checkpoint to the new budget;
- otherwise a fresh start that never mixes with the old outputs: a data or eval stage's
  folder is removed, a training run's folder is moved aside to `train.old-<time>`, and
  the user is told which and why (the fields that changed).

`stage.json` is written last, so a stage killed half-way is never taken as done. The
run folder is locked while a pipeline writes it (fmforge.outputs.locked). Under
torchrun rank 0 takes every decision and broadcasts it, so all ranks agree.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fmforge import __version__
from fmforge.config import Recipe
from fmforge.errors import UserError
from fmforge.outputs import LOCK, MARK, atomic_write_text, locked, missing_folders, remove_if_empty

STAGES = ["collect", "prepare", "tokenizer", "train", "eval", "sample"]

# Fields that change how a stage runs but not what it produces.
NEUTRAL = {
    "data": {"workers", "executor", "ray_address", "strict", "min_keep_fraction"},
    "tokenizer": {"workers"},
}
COLLECT_FIELDS = ("sources", "include", "text_field")
SPLIT_FIELDS = ("val_fraction", "split_seed")
BUDGET = ("max_steps", "max_tokens", "time_budget_s")
# train fields that change neither the run's identity nor its budget (fallback until
# TrainConfig declares its own)
TRAIN_NEUTRAL = ("device", "compile", "attention", "threads", "log_every", "checkpoint_every", "checkpoint_every_s",
                 "keep_checkpoints", "eval_every", "eval_tokens", "max_bad_steps", "price_per_gpu_hour",
                 "activation_checkpointing")
EVAL_SCORING = ("max_docs", "max_bytes", "baselines", "tasks", "task_limit", "code_samples", "code_k",
                "code_temperature", "code_max_new_tokens", "code_timeout_s", "code_memory_mb")
SAMPLE_FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k")
FINETUNE_NEUTRAL = ("enabled", "device", "log_every", "checkpoint_every", "checkpoint_every_s",
                    "keep_checkpoints", "loss_chunk_tokens")  # how the finetune stage runs, not what it makes


@dataclass
class StageRun:
    name: str
    skipped: bool
    seconds: float
    summary: dict = field(default_factory=dict)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flat(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def changed_fields(old: dict, new: dict) -> list[str]:
    """`field old → new` for every setting that differs between two stage records."""
    a, b = _flat(old), _flat(new)
    return [f"{k} {a.get(k)!r} → {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def source_fingerprint(sources: list[str], include: list[str]) -> list:
    """Cheap fingerprint of raw inputs: relative path, size and mtime of every file (no reading)."""
    from fmforge.data.collect import stdlib_root

    out = []
    for s in sources:
        root = stdlib_root() if s == "stdlib" else Path(s)
        if root.is_file():
            st = root.stat()
            out.append([s, st.st_size, st.st_mtime_ns])
        elif root.is_dir():
            h = hashlib.sha256()
            for p in sorted(root.rglob("*")):
                if p.is_file() and "site-packages" not in p.parts:
                    st = p.stat()
                    rel = p.relative_to(root)
                    h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
            out.append([s, h.hexdigest()])
        else:
            out.append([s, "missing"])
    return out


def stage_settings(recipe: Recipe, name: str) -> dict:
    """The recipe fields that change stage `name`'s result (the stage contract)."""
    dump = recipe.model_dump(mode="json")
    data, tok, train, ev = dump["data"], dump["tokenizer"], dump["train"], dump["eval"]
    if name == "collect":
        return {"data": {k: data[k] for k in COLLECT_FIELDS}}
    if name == "prepare":
        skip = NEUTRAL["data"] | set(COLLECT_FIELDS) | set(SPLIT_FIELDS)
        return {"data": {k: v for k, v in data.items() if k not in skip}}
    if name == "tokenizer":
        return {"tokenizer": {k: v for k, v in tok.items() if k not in NEUTRAL["tokenizer"]},
                "data": {k: data[k] for k in SPLIT_FIELDS}}
    if name == "train":
        return {**train_identity(recipe), "budget": train_budget(recipe)}
    if name == "eval":
        scoring = {k: ev[k] for k in EVAL_SCORING}
        if ev.get("stride"):  # only when set, so runs from before the option keep their hash
            scoring["stride"] = ev["stride"]
        return {"eval": scoring, "train": {"price_per_gpu_hour": train["price_per_gpu_hour"]}}
    if name == "sample":
        return {"eval": {k: ev[k] for k in SAMPLE_FIELDS}}
    if name == "finetune":  # corpus-functions pairs follow the pretraining split
        return {"finetune": {k: v for k, v in dump["finetune"].items() if k not in FINETUNE_NEUTRAL},
                "data": {k: data[k] for k in SPLIT_FIELDS}}
    raise KeyError(name)


def train_budget(recipe: Recipe) -> dict:
    budget = getattr(type(recipe.train), "BUDGET_FIELDS", BUDGET)
    return {k: getattr(recipe.train, k) for k in budget}


def train_identity(recipe: Recipe) -> dict:
    """What makes a training run the same run: model and optimizer settings, not its budget."""
    cls = type(recipe.train)
    skip = set(getattr(cls, "BUDGET_FIELDS", BUDGET)) | set(getattr(cls, "NEUTRAL_FIELDS", TRAIN_NEUTRAL))
    dump = recipe.model_dump(mode="json")
    return {"model": dump["model"], "train": {k: v for k, v in dump["train"].items() if k not in skip}}


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


class Pipeline:
    def __init__(self, recipe: Recipe, force: bool = False, verbose: bool = True, resume: bool = False):
        self.recipe, self.force, self.verbose, self.resume = recipe, force, verbose, resume
        self.dir = recipe.run_dir
        self.hashes: dict[str, str] = {}
        self.runs: list[StageRun] = []
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.is_main = int(os.environ.get("RANK", "0")) == 0
        self._control = None  # a gloo group for the ranks' decisions (torchrun)
        self._undo: dict[str, str | None] = {}  # records a train "continue" replaced (_restore_records)

    def stage_dir(self, name: str) -> Path:
        return self.dir / name

    def deps(self, name: str) -> dict:
        """Everything stage `name` depends on: its settings and the stages it reads."""
        upstream = {"collect": [], "prepare": ["collect"], "tokenizer": ["prepare"], "train": ["tokenizer"],
                    "eval": ["train"], "sample": ["train"], "finetune": ["prepare", "train"]}[name]
        deps = {"fmforge": __version__, "stage": name, **stage_settings(self.recipe, name),
                "upstream": {u: self._hash_of(u) for u in upstream}}
        if name == "collect":
            deps["inputs"] = source_fingerprint(self.recipe.data.sources, self.recipe.data.include)
        return deps

    def _hash_of(self, name: str) -> str:
        if name not in self.hashes:
            self.hashes[name] = _hash(self.deps(name))
        return self.hashes[name]

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder's lock (rank 0 only: the other ranks are the same job)."""
        if not self.is_main:
            yield
            return
        self._refuse_foreign_run_dir()
        made = missing_folders(self.dir)
        try:
            with locked(self.dir):
                yield
        finally:  # a first run that failed before writing anything leaves no empty run folder
            remove_if_empty(made)

    def _refuse_foreign_run_dir(self) -> None:
        """`out_dir`/`name` may name a folder of the user's: if it holds files but no stage
        record of ours, stop before writing report.json/report.md or stage folders into it."""
        if not self.dir.is_dir() or any((self.dir / s / f).is_file() for s in [*STAGES, "finetune"]
                                         for f in ("started.json", "stage.json")):
            return
        foreign = sorted(p.name for p in self.dir.iterdir() if p.name != LOCK)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise UserError(f"run folder {self.dir} holds files fmforge did not write ({shown}): give the recipe "
                            "another name (recipe field `name`) or out_dir")

    def _record(self, name: str, file: str) -> dict:
        try:
            return json.loads((self.stage_dir(name) / file).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def up_to_date(self, name: str) -> bool:
        return self._record(name, "stage.json").get("hash") == self._hash_of(name)

    # ---------------------------------------------------------- deciding

    def _decide(self, name: str) -> str:
        """skip | resume | continue | fresh (rank 0), after making the folder ready for it."""
        out = self.stage_dir(name)
        h = self._hash_of(name)
        if not self.force and self.up_to_date(name):
            return "skip"
        started, done = self._record(name, "started.json"), self._record(name, "stage.json")
        prior = started or done
        if out.exists() and not prior and any(out.iterdir()):
            raise UserError(f"{out} holds files fmforge did not write: move them away, or give the recipe "
                            "another name (recipe field `name`) or out_dir")
        if out.exists() and prior and not self.force:
            if prior.get("hash") == h:
                (out / "stage.json").unlink(missing_ok=True)
                self._say(f"[{name}] resuming the interrupted run in {out}")
                return "resume"
            old_deps = prior.get("deps") or {}
            if name == "train" and self.resume and old_deps:
                same = {k: v for k, v in old_deps.items() if k != "budget"} == \
                       {k: v for k, v in self.deps(name).items() if k != "budget"}
                if same:
                    # kept until training runs: a continue the trainer refuses (a budget below the
                    # checkpoint) must leave the finished run finished, not up for a fresh start
                    self._undo = {f: self._text(out / f) for f in ("stage.json", "started.json")}
                    (out / "stage.json").unlink(missing_ok=True)
                    self._write_started(name)
                    self._say(f"[{name}] continuing the run in {out} with a new budget: "
                              + "; ".join(changed_fields(old_deps.get("budget", {}), train_budget(self.recipe))))
                    return "continue"
        if out.exists() and prior:
            why = "--force" if self.force else "; ".join(changed_fields(prior.get("deps") or {}, self.deps(name))[:6]) \
                or "settings changed"
            if name == "train":
                aside = out.with_name(f"train.old-{_stamp()}")
                n = 1
                while aside.exists():
                    aside, n = out.with_name(f"train.old-{_stamp()}-{n}"), n + 1
                os.replace(out, aside)
                hint = "" if self.resume or self.force else " (pass --resume to continue it when only the budget changed)"
                self._say(f"[{name}] starting afresh ({why}); the previous run was moved to {aside}{hint}")
            else:
                shutil.rmtree(out)
                self._say(f"[{name}] starting afresh ({why}); its previous outputs in {out} were removed")
        out.mkdir(parents=True, exist_ok=True)
        self._write_started(name)
        return "fresh"

    @staticmethod
    def _text(path: Path) -> str | None:
        try:
            return path.read_text()
        except OSError:
            return None

    def _restore_records(self, out: Path) -> None:
        """Put back the records a refused continue replaced (see _decide)."""
        for f, text in self._undo.items():
            if text is None:
                (out / f).unlink(missing_ok=True)
            else:
                atomic_write_text(out / f, text)

    def _drop_if_empty(self, out: Path) -> None:
        """A stage that failed on its input leaves no folder, unless it holds work to resume."""
        if self.is_main and out.is_dir() and {p.name for p in out.iterdir()} <= {"started.json", MARK, LOCK}:
            shutil.rmtree(out)

    def _write_started(self, name: str) -> None:
        atomic_write_text(self.stage_dir(name) / "started.json",
                          json.dumps({"hash": self._hash_of(name), "deps": self.deps(name)}, indent=1, default=str))

    def _agree(self, decision: str | None) -> str:
        """Under torchrun: every rank gets rank 0's decision."""
        if self.world <= 1:
            return decision
        import torch.distributed as dist

        if self._control is None:
            from datetime import timedelta

            from fmforge.train.parallelize import setup

            setup(self.recipe.train)  # the process group, on the device training will use
            self._control = dist.new_group(backend="gloo", timeout=timedelta(days=1))
        box = [decision]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def _barrier(self) -> None:
        if self.world > 1 and self._control is not None:
            import torch.distributed as dist

            dist.barrier(group=self._control)

    # ---------------------------------------------------------- running

    def run_stage(self, name: str, fn: Callable[[Path, str], dict]) -> StageRun:
        out = self.stage_dir(name)
        decision = self._agree(self._decide(name) if self.is_main else None)
        if decision == "skip":
            run = StageRun(name, True, 0.0, self._record(name, "stage.json").get("summary", {}))
            self._say(f"[{name}] up to date, skipped")
        elif not self.is_main and name != "train":
            # the other ranks wait for rank 0's data stages and leave evaluation to it
            if name in ("eval", "sample"):
                run = StageRun(name, True, 0.0, {})
            else:
                self._barrier()
                run = StageRun(name, True, 0.0, self._record(name, "stage.json").get("summary", {}))
            self.runs.append(run)
            return run
        else:
            self._say(f"[{name}] running")
            t0 = time.perf_counter()
            try:
                summary = fn(out, decision)
            except UserError:
                if decision == "continue":
                    self._restore_records(out)
                self._drop_if_empty(out)
                raise
            secs = time.perf_counter() - t0
            if self.is_main:
                record = {"hash": self._hash_of(name), "deps": self.deps(name), "seconds": secs, "summary": summary,
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                atomic_write_text(out / "stage.json", json.dumps(record, indent=2, default=str))
            run = StageRun(name, False, secs, summary)
            self._say(f"[{name}] done in {secs:.1f}s")
        if name in ("collect", "prepare", "tokenizer"):
            self._barrier()
        self.runs.append(run)
        return run

    def _say(self, text: str) -> None:
        if self.verbose and self.is_main:
            print(text, file=sys.stderr, flush=True)

    # ------------------------------------------------------------- the stages

    def collect(self) -> StageRun:
        from fmforge.data.collect import collect

        def fn(out: Path, decision: str) -> dict:
            d = self.recipe.data
            s = collect(d.sources, d.include, out, text_field=d.text_field, strict=d.strict, html_extractor=d.html_extractor)
            return {"docs": s.docs, "bytes": s.bytes, "skipped": s.skipped}

        return self.run_stage("collect", fn)

    def prepare(self) -> StageRun:
        from fmforge.data.datacard import summary
        from fmforge.data.prepare import prepare

        def fn(out: Path, decision: str) -> dict:  # the data card summary (full card: prepare/datacard.md)
            return summary(prepare(self.stage_dir("collect"), out, self.recipe.data, progress=self.verbose))  # raises on too little kept

        return self.run_stage("prepare", fn)

    def tokenizer(self) -> StageRun:
        from fmforge.tokenizer.bpe import load, save, train_bpe
        from fmforge.tokenizer.encode import encode_corpus, is_validation
        from fmforge.tokenizer.sample import sample_docs

        r = self.recipe

        def fn(out: Path, decision: str) -> dict:
            docs = self.stage_dir("prepare")
            t0 = time.perf_counter()
            if decision == "resume" and (out / "tokenizer.json").exists():
                tok = load(out)  # trained before the interruption (written atomically); encode resumes
            elif r.tokenizer.path:
                tok = load(Path(r.tokenizer.path))
                save(tok, out)
            else:  # train on training documents only: validation text stays unseen
                texts = sample_docs(docs, r.tokenizer.sample_bytes,
                                    exclude=lambda i: is_validation(i, r.data.val_fraction, r.data.split_seed))
                tok = train_bpe(texts, r.tokenizer, out)
            t_train = time.perf_counter() - t0
            s = encode_corpus(tok, docs, out / "shards", r.data.val_fraction, r.data.split_seed,
                              workers=r.tokenizer.workers, chunk_bytes=r.tokenizer.chunk_bytes, verbose=self.verbose,
                              executor=r.data.executor, ray_address=r.data.ray_address)
            return {"vocab_size": tok.get_vocab_size(), "train_seconds": t_train,
                    "encode_seconds": time.perf_counter() - t0 - t_train, **s.__dict__,
                    "bytes_per_token": s.bytes / max(1, s.train_tokens + s.val_tokens - s.train_docs - s.val_docs)}

        return self.run_stage("tokenizer", fn)

    def train(self, out: Path | None = None) -> StageRun:
        """The train stage; `out` (fmforge train --out) trains into a folder of the user's
        instead, outside the stage contract (resume there only with --resume)."""
        from fmforge.train.trainer import train

        def fn(folder: Path, decision: str) -> dict:
            res = train(self.recipe, self.stage_dir("tokenizer") / "shards", folder,
                        resume=decision in ("resume", "continue"), verbose=self.verbose)
            return res.to_dict()

        if out is not None:
            run = StageRun("train", False, 0.0, fn(Path(out), "continue" if self.resume else "fresh"))
            self.runs.append(run)
            return run
        return self.run_stage("train", fn)

    def eval(self) -> StageRun:
        from fmforge.eval.run import evaluate_run

        return self.run_stage("eval", lambda out, decision: evaluate_run(self.recipe, self.dir, out))

    def sample(self) -> StageRun:
        from fmforge.eval.run import sample_run

        return self.run_stage("sample", lambda out, decision: sample_run(self.recipe, self.dir, out))

    def finetune(self) -> StageRun:
        from fmforge.finetune.stage import run_finetune_stage

        return self.run_stage("finetune", lambda out, decision: run_finetune_stage(
            self.recipe, self.dir, out, self.verbose, resume=decision == "resume"))

    def run_stages(self, names: list[str], close: bool = True) -> list[StageRun]:
        """Run `names` in order, holding the run folder's lock."""
        with self.lock():
            for name in names:
                getattr(self, name)()
        if close:
            self.close()
        return self.runs

    def close(self) -> None:
        """Under torchrun: end the process group the ranks agreed through. Left alive to the
        interpreter's exit, gloo's threads abort the process (SIGABRT, 'terminate called
        without an active exception') after every stage was skipped."""
        if self._control is not None:
            import torch.distributed as dist

            dist.barrier(group=self._control)
            self._control = None
            if dist.is_initialized():
                dist.destroy_process_group()

    def run_all(self) -> dict:
        t0 = time.perf_counter()
        self.run_stages(STAGES + (["finetune"] if self.recipe.finetune.enabled else []))
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
        "tasks": ev.get("tasks"),
        "core": ev.get("core"),
        "prompt": by.get("sample", {}).get("prompt"),
        "sample": by.get("sample", {}).get("sample"),
        **({"finetune": by["finetune"]} if "finetune" in by else {}),
    }


def write_report(report: dict, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(run_dir / "report.md", report_markdown(report))


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
    scored = report.get("val_docs_scored")
    if scored is not None:  # eval.max_docs may score a share of them: say which figures the rows above are
        rows.append(("val documents scored", f"{scored:,} of {_f(d['val_docs'], '{:,}')}"))
    for name, m in (report.get("tasks") or {}).items():
        rows.append((f"{name} acc / acc_norm", f"{_f(m.get('acc'))} / {_f(m.get('acc_norm'))} (n={m['n']})"))
    if report.get("core") is not None:
        rows.append(("CORE-like score", _f(report["core"])))
    if report.get("cost"):
        c = report["cost"]
        rows.append(("cost", f"{_f(c.get('device_hours'), '{:.3f}')} device-h, ${_f(c.get('usd'), '{:.4f}')}"))
    ft = report.get("finetune")
    if ft and ft.get("base_eval_loss") is not None:
        rows += [(f"finetune ({ft['method']}) held-out loss", f"{ft['base_eval_loss']:.4f} → {ft['tuned_eval_loss']:.4f} "
                  f"(base → tuned, {ft['eval_examples']:,} examples)"),
                 ("finetune trainable params", f"{ft['trainable_params']:,} ({ft['trainable_percent']:.2f}%)")]
    rows += [(f"stage {k}", "skipped" if v["skipped"] else f"{v['seconds']:.1f}s") for k, v in report["stages"].items()]
    rows.append(("total time (s)", f"{report['seconds']:.1f}"))
    return rows


def report_markdown(report: dict) -> str:
    lines = [f"# fmforge run: {report['recipe']}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report_rows(report)]
    lines += ["", "## Sample", "", "```python", (report.get("prompt") or "") + (report.get("sample") or ""), "```", ""]
    s = (report.get("finetune") or {}).get("sample")
    if s:
        lines += ["## Fine-tuned sample (held-out prompt)", "", "```python", s["prompt"] + s["tuned"], "```", ""]
    return "\n".join(lines)
