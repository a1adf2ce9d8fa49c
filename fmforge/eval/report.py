"""`fmforge report RUN [RUN ...]`: one HTML page about one or more runs, with its plots
beside it as PNG files (matplotlib, no scripts, no network: open it from disk).

Read from each run folder: train/metrics.jsonl (loss, tokens/s, MFU, dollars per step;
{"eval": ...} lines: held-out loss/bpb and task scores during training), train/summary.json,
eval/eval.json (final bits per byte next to gzip/xz, tasks, cost), and the stage records
of prepare (documents in/out, removal reasons) and tokenizer (vocabulary, bytes/token).
A missing part is left out of the page, not an error; a run folder without any is one.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from fmforge.errors import InputNotFound, UserError
from fmforge.outputs import atomic_write_text, claimed


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_run(run: Path) -> dict:
    run = Path(run)
    if not run.is_dir():
        raise InputNotFound(f"{run}: not a run folder")
    steps, evals = [], []
    mpath = run / "train" / "metrics.jsonl"
    if mpath.is_file():
        for n, line in enumerate(mpath.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise UserError(f"{mpath}:{n}: not JSON") from None
            (evals.append(rec["eval"]) if "eval" in rec else steps.append(rec))
    stage = lambda name: (_json(run / name / "stage.json") or {}).get("summary") or {}  # noqa: E731
    data = {"name": run.name, "path": str(run), "steps": steps, "evals": evals,
            "summary": _json(run / "train" / "summary.json") or stage("train"),
            "eval": _json(run / "eval" / "eval.json") or {}, "prepare": stage("prepare"),
            "tokenizer": stage("tokenizer"), "collect": stage("collect")}
    if not (steps or data["eval"] or data["prepare"] or data["summary"]):
        raise InputNotFound(f"{run}: no training metrics, evaluation or stage records found (is it a run folder, "
                            "runs/NAME, written by `fmforge run`?)")
    return data


def _plots(runs: list[dict], out: Path) -> list[tuple[str, str]]:
    try:
        import matplotlib
    except ImportError:
        raise UserError("fmforge report draws with matplotlib, which is missing: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []

    def save(fig, name, title):
        fig.tight_layout()
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(out / name)
        made.append((name, title))

    if any(r["steps"] for r in runs):
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            s = [x for x in r["steps"] if "loss" in x]
            ax.plot([x["tokens"] for x in s], [x["loss"] for x in s], label=f"{r['name']} train", lw=1)
            v = [e for e in r["evals"] if "val_loss" in e]
            if v:
                tok_at = {x["step"]: x["tokens"] for x in s}
                ax.plot([tok_at.get(e["step"], 0) for e in v], [e["val_loss"] for e in v], "o-",
                        label=f"{r['name']} held-out")
        ax.set(xlabel="tokens", ylabel="loss (nats/token)", title="loss")
        ax.legend()
        save(fig, "loss.png", "Training and held-out loss")

        fig, ax = plt.subplots(figsize=(7, 4))
        drawn = False
        for r in runs:
            tok_at = {x["step"]: x.get("tokens", 0) for x in r["steps"]}
            v = [e for e in r["evals"] if "val_bpb" in e]
            if v:
                ax.plot([tok_at.get(e["step"], 0) for e in v], [e["val_bpb"] for e in v], "o-", label=r["name"])
                drawn = True
            ev = r["eval"]
            if ev.get("val_bpb") is not None:
                last = r["steps"][-1].get("tokens", 0) if r["steps"] else 0
                ax.scatter([last], [ev["val_bpb"]], marker="*", s=120, label=f"{r['name']} final")
                for k, style in (("gzip_bpb", "--"), ("xz_bpb", ":")):
                    if ev.get(k):
                        ax.axhline(ev[k], ls=style, lw=1, color="grey", label=f"{r['name']} {k.split('_')[0]}")
                drawn = True
            elif (ev.get("lm") or {}).get("bpb") is not None:
                last = r["steps"][-1].get("tokens", 0) if r["steps"] else 0
                ax.scatter([last], [ev["lm"]["bpb"]], marker="*", s=120, label=f"{r['name']} final")
                drawn = True
        ax.set(xlabel="tokens", ylabel="bits per byte", title="held-out bits per byte")
        if drawn:
            ax.legend()
        save(fig, "bpb.png", "Held-out bits per byte (gzip / xz as grey lines)")

        fig, ax = plt.subplots(figsize=(7, 4))
        ax2 = None
        for r in runs:
            s = [x for x in r["steps"] if x.get("tokens_per_s")]
            ax.plot([x["elapsed_s"] for x in s], [x["tokens_per_s"] for x in s], lw=1, label=f"{r['name']} tokens/s")
            m = [x for x in s if x.get("mfu") is not None]
            if m:
                ax2 = ax2 or ax.twinx()
                ax2.plot([x["elapsed_s"] for x in m], [100 * x["mfu"] for x in m], ls="--", lw=1,
                         label=f"{r['name']} MFU %")
                ax2.set_ylabel("MFU (%)")
        ax.set(xlabel="training seconds", ylabel="tokens/s", title="throughput")
        ax.legend(loc="lower right")
        save(fig, "throughput.png", "Throughput (and MFU where the device's peak is known)")

    if any(e.get("tasks") for r in runs for e in r["evals"]):
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            t = [e for e in r["evals"] if e.get("tasks")]
            for name in sorted({n for e in t for n in e["tasks"]}):
                pts = [(e["step"], e["tasks"][name][e["tasks"][name].get("core_metric", "acc")]) for e in t
                       if name in e["tasks"]]
                ax.plot(*zip(*pts), "o-", label=f"{r['name']} {name}")
        ax.set(xlabel="step", ylabel="accuracy", title="downstream tasks during training")
        ax.legend(fontsize=8)
        save(fig, "tasks.png", "Task accuracy during training")
    return made


def _table(headers: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.4f}" if abs(x) < 1000 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def render(runs: list[dict], plots: list[tuple[str, str]]) -> str:
    names = [r["name"] for r in runs]
    parts = [f"<h1>fmforge report: {html.escape(', '.join(names))}</h1>"]
    for png, title in plots:
        parts.append(f'<figure><img src="{png}" alt="{html.escape(title)}"><figcaption>{html.escape(title)}'
                     "</figcaption></figure>")
    overview = []
    for key, label in (("params", "parameters"), ("steps", "steps"), ("tokens", "tokens trained"),
                       ("seconds", "train seconds"), ("tokens_per_s", "tokens/s"), ("mfu", "MFU (median)"),
                       ("final_loss", "final train loss")):
        overview.append([label] + [r["summary"].get(key) for r in runs])
    for key, label in (("val_loss", "held-out loss"), ("val_bpb", "held-out bits/byte"), ("gzip_bpb", "gzip -9 bits/byte"),
                       ("xz_bpb", "xz -9e bits/byte"), ("core", "CORE-like score")):
        overview.append([label] + [r["eval"].get(key) for r in runs])
    parts += ["<h2>Overview</h2>", _table(["", *names], overview)]
    data = []
    for key, label in (("docs_in", "documents in"), ("docs_out", "documents kept"), ("bytes_in", "bytes in"),
                       ("bytes_out", "bytes kept"), ("contaminated_docs", "contaminated documents")):
        data.append([label] + [r["prepare"].get(key) for r in runs])
    reasons = sorted({k for r in runs for k in (r["prepare"].get("removed") or {})})
    data += [[f"removed: {k}"] + [(r["prepare"].get("removed") or {}).get(k, 0) for r in runs] for k in reasons]
    parts += ["<h2>Data</h2>", _table(["", *names], data)]
    tok = [[label] + [r["tokenizer"].get(key) for r in runs] for key, label in
           (("vocab_size", "vocabulary"), ("bytes_per_token", "bytes per token"), ("train_docs", "train documents"),
            ("val_docs", "validation documents"), ("train_tokens", "train tokens"), ("val_tokens", "validation tokens"))]
    parts += ["<h2>Tokenizer</h2>", _table(["", *names], tok)]
    srcs = sorted({k for r in runs for k in (r["eval"].get("sources") or {})})
    if srcs:  # the eval stage's held-out documents by source
        rows = []
        for k in srcs:
            row = [k]
            for r in runs:
                m = (r["eval"].get("sources") or {}).get(k)
                row.append(None if m is None else f"{m['val_bpb']:.4f} ({m['gzip_bpb']:.3f} / {m['xz_bpb']:.3f}), "
                                                  f"{m['docs']:,} docs")
            rows.append(row)
        parts += ["<h2>Held-out bits per byte by source (gzip / xz)</h2>", _table(["source", *names], rows)]
    tasks = sorted({t for r in runs for t in (r["eval"].get("tasks") or {})})
    if tasks:
        rows = []
        for t in tasks:
            row = [t]
            for r in runs:
                m = (r["eval"].get("tasks") or {}).get(t)
                row.append(None if m is None else f"{m.get('acc', 0):.4f} / {m.get('acc_norm') or 0:.4f} (n={m['n']})")
            rows.append(row)
        parts += ["<h2>Evaluation (acc / acc_norm)</h2>", _table(["task", *names], rows)]
    cost = []
    for key, label in (("device_hours", "device-hours"), ("usd", "dollars"), ("energy_kwh", "energy (kWh)"), ("flops", "FLOPs"),
                       ("accelerator", "device")):
        cost.append([label] + [(r["eval"].get("cost") or {}).get(key) for r in runs])
    parts += ["<h2>Cost</h2>", _table(["", *names], cost)]
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>fmforge report</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def write_report(runs: list[Path], out: Path) -> Path:
    data = [read_run(r) for r in runs]
    with claimed(Path(out), "report", []) as od:
        plots = _plots(data, Path(out))
        atomic_write_text(Path(out) / "report.html", render(data, plots))
        od.record(["report.html", *(p for p, _ in plots)])
    return Path(out) / "report.html"
