"""Corpora the data stages were not tuned on, for the agreement and near-duplicate benchmarks.

fmforge's word split (fmforge/data/text.py) and its MinHash settings were tuned on the
shared pretrain files (books, Wikipedia 2015, PEPs, Shakespeare; docs/LOG.md). Held out:
  - ``wikitext``: WikiText-2 valid + test (shared/data/eval/wikitext-2), cut into its
    articles at the `` = Title = `` lines; the tokenised ``@-@ @,@ @.@`` joiners are undone,
    ``<unk>`` stays (it is what the file holds);
  - ``readmes``: the long descriptions (README in Markdown or reStructuredText) of the
    Python packages installed beside the running interpreter (``*.dist-info/METADATA``):
    many authors, badges, tables, code blocks, link lists: web-like text. Which packages
    are installed differs between machines: the result records the count and a digest.
``peps`` (in the tuning corpus) is available as a reference, reported apart.
"""
from __future__ import annotations

import email.parser
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
_TITLE = re.compile(r"^ = [^=].* = $")
_JOINERS = re.compile(r" @([-,.])@ ")


def wikitext(shared: Path = SHARED) -> list[dict]:
    docs = []
    for split in ("valid", "test"):
        path = shared / "eval" / "wikitext-2" / f"{split}.txt"
        cur: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines() + [" = END = "]:
            if _TITLE.match(line):
                text = _JOINERS.sub(r"\1", "\n".join(cur)).strip()
                if text:
                    docs.append({"id": f"wikitext-{split}:{len(docs)}", "text": text})
                cur = []
            cur.append(line.strip())
    return docs


def readmes(min_chars: int = 200) -> list[dict]:
    sites = sorted({p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir()})
    docs, seen = [], set()
    for meta in sorted(m for site in sites for m in site.glob("*.dist-info/METADATA")):
        msg = email.parser.Parser().parsestr(meta.read_text(encoding="utf-8", errors="replace"))
        body = (msg.get_payload() or msg.get("Description") or "").strip()
        name = msg.get("Name") or meta.parent.name
        if len(body) < min_chars or body in seen:
            continue
        seen.add(body)
        docs.append({"id": f"readme:{name}", "text": body})
    return docs


def peps(shared: Path = SHARED) -> list[dict]:
    from fmforge.data.collect import CollectStats
    from fmforge.data.readers import iter_file

    return [{"id": f"pep:{i}", "text": d["text"]}
            for i, d in enumerate(iter_file(shared / "pretrain" / "peps.tar.gz", CollectStats()))]


LOADERS = {"wikitext": wikitext, "readmes": lambda shared=SHARED: readmes(), "peps": peps}


def digest(docs: list[dict]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d["id"].encode() + b"\0" + d["text"].encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]


def split_of(doc_id: str) -> str:
    """'dev' or 'test', fixed by the id (a setting is chosen on dev, reported on test)."""
    return "dev" if hashlib.sha256(doc_id.encode()).digest()[0] % 2 == 0 else "test"
