"""The data card: a readable account of what prepare did, for people (datacard.md) and
for the run report (``summary``)."""
from __future__ import annotations

from pathlib import Path

from fmforge.data.reasons import field_of
from fmforge.data.stats import PrepareStats


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "—"


def _bar(n: int, top: int, width: int = 30) -> str:
    return "█" * max(1 if n else 0, round(width * n / top)) if top else ""


def _measured(m: dict | None) -> str:
    if not m:
        return ""
    from fmforge.data.quality import fmt

    mean = m["sum"] / m["n"]
    return f"{fmt(m['min'])} / {fmt(round(mean) if isinstance(m['min'], int) else mean)} / {fmt(m['max'])}"


def _kept_when(m: dict | None) -> str:
    return f"{m['op']} {m['threshold']}" if m else ""


def summary(stats: PrepareStats) -> dict:
    """The numbers the run report shows."""
    return {"docs_in": stats.docs_in, "docs_out": stats.docs_out, "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out, "removed": dict(stats.removed.most_common()),
            "pii": dict(stats.pii), "lines_removed": {k: v["lines"] for k, v in stats.lines_removed.items()},
            "contaminated_docs": stats.contaminated_docs,
            "languages": dict(stats.languages_out.most_common(5)), "seconds": round(stats.seconds, 2)}


def render(stats: PrepareStats, cfg=None) -> str:
    s = stats
    out = ["# Data card", "",
           f"{s.docs_out:,} of {s.docs_in:,} documents kept ({_pct(s.docs_out, s.docs_in)}), "
           f"{_mb(s.bytes_out)} of {_mb(s.bytes_in)} ({_pct(s.bytes_out, s.bytes_in)}); "
           f"{sum(s.removed.values()):,} removed, each with its reason below. "
           f"Prepared by {s.workers} worker(s) in {s.seconds:.1f} s.", "",
           "## Stages", "", "| stage | docs in | docs out | bytes in | bytes out |", "|---|---:|---:|---:|---:|"]
    for name, st in s.stages.items():
        out.append(f"| {name} | {st['docs_in']:,} | {st['docs_out']:,} | {_mb(st['bytes_in'])} | {_mb(st['bytes_out'])} |")
    out += ["", "Documents by kind: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.kinds.items())), ""]
    out += bytes_account(s)
    out += ["## Removal reasons (whole documents)", ""]
    if not s.removed:
        out.append("No document was removed.")
    else:
        out += ["Measured: what the rule computed on the documents it removed (min / mean / max), beside the "
                "threshold a document must meet to be kept.", "",
                "| reason | docs | bytes | measured (min / mean / max) | kept when | recipe field |",
                "|---|---:|---:|---|---|---|"]
        out += [f"| {r} | {n:,} | {_mb(s.removed_bytes.get(r, 0))} | {_measured(s.measured.get(r))} | "
                f"{_kept_when(s.measured.get(r))} | `{field_of(r)}` |" for r, n in s.removed.most_common()]
        out += ["", "### Examples", ""]
        for r, _ in s.removed.most_common():
            out.append(f"**{r}**")
            out.append("")
            for ex in s.examples.get(r, []):
                detail = f" ({ex['detail']})" if ex.get("detail") else ""
                text = ex["text"].replace("`", "'")
                out.append(f"- `{ex['where']}`{detail}: `{text}`")
            out.append("")
    out += ["## Lines removed inside kept documents (C4 line rules)", ""]
    if not s.lines_removed:
        out += ["No line was removed.", ""]
    else:
        out += ["| rule | lines | bytes | documents | recipe field |", "|---|---:|---:|---:|---|"]
        for rule, r in sorted(s.lines_removed.items(), key=lambda kv: -kv[1]["bytes"]):
            out.append(f"| {rule} | {r['lines']:,} | {r['bytes']:,} | {r['docs']:,} | `{field_of(rule)}` |")
        out += ["", "### Examples", ""]
        for rule, exs in s.line_examples.items():
            out += [f"**{rule}**", ""] + [f"- `{e['where']}`: `{e['text'].replace('`', chr(39))}`" for e in exs] + [""]
    out += ["## PII redaction", ""]
    if s.pii:
        out.append(f"{s.pii_docs:,} documents had PII replaced by placeholders: "
                   + ", ".join(f"{k} {v:,}" for k, v in s.pii.most_common())
                   + f" ({s.pii_bytes_in:,} bytes of matches replaced by {s.pii_bytes_out:,} bytes of placeholders).")
    else:
        out.append("No PII found." if not cfg or cfg.pii else "PII redaction is off.")
    out.append("")
    if cfg is not None and cfg.decontaminate:
        out += ["## Decontamination", "",
                f"{s.contaminated_docs:,} documents share a {cfg.decontam_ngram}-word n-gram with the evaluation sets "
                f"({cfg.decontam_action}); evaluation files: {', '.join(cfg.decontaminate)}.", ""]
    for title, hist in (("Languages (kept documents)", s.languages_out), ("Languages (all documents)", s.languages_in)):
        out += [f"## {title}", "", "| language | docs | |", "|---|---:|---|"]
        top = max(hist.values(), default=0)
        out += [f"| {k} | {v:,} | {_bar(v, top)} |" for k, v in hist.most_common(20)]
        out.append("")
    out += ["## Document lengths (UTF-8 bytes)", "", "| length | docs in | docs kept | |", "|---|---:|---:|---|"]
    keys = sorted(set(s.lengths_in) | set(s.lengths_out), key=_bucket_order)
    top = max(s.lengths_in.values(), default=0)
    out += [f"| {k} | {s.lengths_in.get(k, 0):,} | {s.lengths_out.get(k, 0):,} | {_bar(s.lengths_out.get(k, 0), top)} |"
            for k in keys]
    out.append("")
    return "\n".join(out)


STAGE_CHANGE = {"clean": "Unicode normalisation and repair (data.normalize, data.repair_unicode)",
                "c4": "C4 line removal (table below)", "pii": "PII placeholders (data.pii)"}


def bytes_account(s: PrepareStats) -> list[str]:
    """Where every byte between input and output went: per stage, bytes leaving in
    removed documents and bytes changed inside kept ones; they add up to the total."""
    out = ["## Where the bytes went", "",
           f"{_mb(s.bytes_in)} in, {_mb(s.bytes_out)} out: {s.bytes_in - s.bytes_out:,} bytes fewer, accounted as:", "",
           "| stage | bytes in removed documents | bytes changed in kept documents | how |", "|---|---:|---:|---|"]
    for name, st in s.stages.items():
        dropped = st.get("bytes_dropped", 0)
        changed = st["bytes_in"] - st["bytes_out"] - dropped
        if dropped or changed:
            out.append(f"| {name} | {dropped:,} | {changed:,} | {STAGE_CHANGE.get(name, '') if changed else ''} |")
    out.append("")
    return out


def _bucket_order(key: str) -> float:
    if key.startswith("<"):
        return -1
    num = key.lstrip(">=").split("-")[0]
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(num[-1], 1)
    return float(num.rstrip("KMG")) * mult


def write_datacard(stats: PrepareStats, path: Path, cfg=None) -> None:
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(stats, cfg), encoding="utf-8")
    os.replace(tmp, path)
