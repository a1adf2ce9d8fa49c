"""Counts that every prepare stage keeps, mergeable across tasks and workers: documents
and bytes in/out per stage, removal reasons with counts and a few examples, PII counts,
language and length histograms. Merging is in task order, so examples and totals are
the same for any number of workers."""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

EXAMPLES_PER_REASON = 3
SNIPPET_CHARS = 160


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def length_bucket(n_bytes: int) -> str:
    """Power-of-4 byte buckets: '<64', '64-256', ..., '>=16M'."""
    if n_bytes < 64:
        return "<64"
    k = min(int(math.log(n_bytes, 4)), 12)
    lo = 4 ** k
    return f">={_size(lo)}" if k == 12 else f"{_size(lo)}-{_size(lo * 4)}"


def _size(n: int) -> str:
    for unit in ("", "K", "M", "G"):
        if n < 1024:
            return f"{n}{unit}"
        n //= 1024
    return f"{n}T"


def where(doc: dict) -> str:
    try:
        meta = json.loads(doc.get("meta") or "{}")
    except json.JSONDecodeError:
        meta = {}
    path = meta.get("path") or meta.get("url") or doc["id"]
    return f"{doc.get('source', '')}:{path}" if doc.get("source") else str(path)


@dataclass
class PrepareStats:
    docs_in: int = 0
    bytes_in: int = 0
    docs_out: int = 0
    bytes_out: int = 0
    stages: dict = field(default_factory=dict)  # stage -> {docs_in, bytes_in, docs_out, bytes_out}
    removed: Counter = field(default_factory=Counter)  # reason -> docs
    removed_bytes: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # reason -> [{where, detail, text}]
    # what the rule measured on the documents it removed: reason -> {n, min, max, sum, threshold, op}
    measured: dict = field(default_factory=dict)
    pii: Counter = field(default_factory=Counter)  # kind -> replacements
    pii_docs: int = 0
    contaminated_docs: int = 0  # documents with an eval n-gram (dropped or only reported)
    languages_in: Counter = field(default_factory=Counter)
    languages_out: Counter = field(default_factory=Counter)
    lengths_in: Counter = field(default_factory=Counter)
    lengths_out: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)  # prose / code documents seen
    # text removed inside kept documents: rule -> {lines, bytes, docs}, with a few examples
    lines_removed: dict = field(default_factory=dict)
    line_examples: dict = field(default_factory=dict)  # rule -> [{where, text}]
    pii_bytes_in: int = 0  # UTF-8 bytes of the PII matches replaced ...
    pii_bytes_out: int = 0  # ... and of the placeholders that replaced them
    workers: int = 1
    seconds: float = 0.0
    # wall seconds of prepare's phases (plan, tasks, merge, dedup, write): where the time goes
    phase_seconds: dict = field(default_factory=dict)

    def stage(self, name: str, docs_in: int, bytes_in: int, docs_out: int, bytes_out: int, bytes_dropped: int = 0) -> None:
        """Account one stage; `bytes_dropped`: the part of bytes_in - bytes_out that left in
        removed documents (the rest was changed inside kept ones)."""
        s = self.stages.setdefault(name, {"docs_in": 0, "bytes_in": 0, "docs_out": 0, "bytes_out": 0, "bytes_dropped": 0})
        s["docs_in"] += docs_in
        s["bytes_in"] += bytes_in
        s["docs_out"] += docs_out
        s["bytes_out"] += bytes_out
        s["bytes_dropped"] = s.get("bytes_dropped", 0) + bytes_dropped

    def drop(self, reason: str, doc: dict, text: str, detail="", measured: tuple | None = None) -> None:
        """`detail` may be a callable: computed only for a document kept as an example.
        `measured`: (value, threshold, op) the rule compared, summarised per reason."""
        self.removed[reason] += 1
        self.removed_bytes[reason] += utf8_len(text)
        if measured is not None:
            self.measure(reason, {"n": 1, "min": measured[0], "max": measured[0], "sum": measured[0],
                                  "threshold": measured[1], "op": measured[2]})
        ex = self.examples.setdefault(reason, [])
        if len(ex) < EXAMPLES_PER_REASON:
            snippet = " ".join(text[:SNIPPET_CHARS * 2].split())[:SNIPPET_CHARS]
            ex.append({"where": where(doc), "detail": detail() if callable(detail) else detail, "text": snippet})

    def measure(self, reason: str, m: dict) -> None:
        mine = self.measured.get(reason)
        if mine is None:
            self.measured[reason] = dict(m)
            return
        mine["n"] += m["n"]
        mine["sum"] += m["sum"]
        mine["min"], mine["max"] = min(mine["min"], m["min"]), max(mine["max"], m["max"])

    def lines(self, removed: dict, doc: dict) -> None:
        """Merge one document's line removals ({rule: [lines, bytes, first line]})."""
        for rule, (n, b, line) in removed.items():
            r = self.lines_removed.setdefault(rule, {"lines": 0, "bytes": 0, "docs": 0})
            r["lines"] += n
            r["bytes"] += b
            r["docs"] += 1
            ex = self.line_examples.setdefault(rule, [])
            if line and len(ex) < EXAMPLES_PER_REASON:
                ex.append({"where": where(doc), "text": " ".join(line.split())[:SNIPPET_CHARS]})

    def merge(self, other: "PrepareStats") -> None:
        self.docs_in += other.docs_in
        self.bytes_in += other.bytes_in
        self.docs_out += other.docs_out
        self.bytes_out += other.bytes_out
        for name, s in other.stages.items():
            self.stage(name, s["docs_in"], s["bytes_in"], s["docs_out"], s["bytes_out"], s.get("bytes_dropped", 0))
        for rule, r in other.lines_removed.items():
            mine = self.lines_removed.setdefault(rule, {"lines": 0, "bytes": 0, "docs": 0})
            for k in mine:
                mine[k] += r[k]
        for rule, ex in other.line_examples.items():
            mine = self.line_examples.setdefault(rule, [])
            mine.extend(ex[: EXAMPLES_PER_REASON - len(mine)])
        self.pii_bytes_in += other.pii_bytes_in
        self.pii_bytes_out += other.pii_bytes_out
        for c in ("removed", "removed_bytes", "pii", "languages_in", "languages_out", "lengths_in", "lengths_out", "kinds"):
            getattr(self, c).update(getattr(other, c))
        self.pii_docs += other.pii_docs
        self.contaminated_docs += other.contaminated_docs
        for reason, m in other.measured.items():
            self.measure(reason, m)
        for reason, ex in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(ex[: EXAMPLES_PER_REASON - len(mine)])

    def to_dict(self) -> dict:
        d = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
        d["removed"] = dict(self.removed.most_common())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PrepareStats":
        s = cls()
        for k, v in d.items():
            if isinstance(getattr(s, k, None), Counter):
                v = Counter(v)
            setattr(s, k, v)
        return s
