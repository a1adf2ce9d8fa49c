"""A labelled evaluation set for the quality filters, built from real text.

Good documents are real: Standard Ebooks books, Wikipedia articles (WikiExtractor text),
WikiText-2 articles (tokenised, `<unk>` version), Python Enhancement Proposals (docs),
Shakespeare scenes (drama: speaker lines), Python standard-library modules (code).
Bad documents are made from them and from templates, one generator per kind of junk the
filters exist for: navigation menus and boilerplate, keyword lists, link lists, repeated
lines, repeated paragraphs, lorem ipsum, shuffled-word gibberish, character soup,
machine-translated-looking fragments, tables of numbers, very short pages, spam with
bullets and ellipses; for code: minified, auto-generated and symbol-art files.

Dev/test are held out by source document: every good document is assigned by a hash of
its id, and a bad document goes with the good document it was made from (its "donor"), so
no text of a test document, nor junk made from it, is seen when thresholds are chosen.

    python benchmarks/filter_evalset.py --out evalset.jsonl     # write the set as JSONL
"""
from __future__ import annotations

import argparse
import io
import json
import random
import re
import sys
import sysconfig
import tarfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

GOOD_SOURCES = ("books", "enwiki", "wikitext", "peps", "shakespeare", "code")
MIN_WORDS = 200  # good prose is a document of 200 words or more (the Wikipedia criterion)


def split_of(doc_id: str, dev_share: float = 0.5) -> str:
    """dev or test, from a stable hash of the source document's id."""
    return "dev" if zlib.crc32(doc_id.encode()) % 1000 < dev_share * 1000 else "test"


def _jsonl_zst(path: Path):
    import zstandard

    with open(path, "rb") as raw:
        for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8"):
            yield json.loads(line)


def _good(source: str, i, text: str, kind: str = "prose") -> dict:
    doc_id = f"{source}/{i}"
    return {"id": doc_id, "text": text, "label": "good", "source": source, "kind": kind,
            "generator": source, "split": split_of(doc_id), "donor": doc_id}


def good_docs(shared: Path = SHARED, per_source: int = 600, rng: random.Random | None = None,
              max_chars: int | None = None) -> list[dict]:
    """Real documents of each source (at most `per_source`, a seeded sample; only documents of
    at most `max_chars` characters when given: a quick run)."""
    rng = rng or random.Random(0)
    out: list[dict] = []

    def take(docs: list[dict]) -> None:
        if max_chars:
            docs = [d for d in docs if len(d["text"]) <= max_chars]
        out.extend(docs if len(docs) <= per_source else rng.sample(docs, per_source))

    pre = shared / "pretrain"
    take([_good("books", r["meta"].get("title", i), r["text"]) for i, r in enumerate(_jsonl_zst(pre / "books.jsonl.zst"))])
    take([_good("enwiki", r["meta"].get("id", i), r["text"]) for i, r in enumerate(_jsonl_zst(pre / "enwiki.jsonl.zst"))
          if len(r["text"].split()) >= MIN_WORDS])
    wt = []
    for part in ("valid", "test"):
        text = (shared / "eval" / "wikitext-2" / f"{part}.txt").read_text(encoding="utf-8")
        # articles start at a level-1 heading line " = Title = "
        for j, art in enumerate(re.split(r"\n(?= = [^=].* = \n)", text)):
            if len(art.split()) >= MIN_WORDS:
                wt.append(_good("wikitext", f"{part}-{j}", art.strip("\n")))
    take(wt)
    peps = []
    with tarfile.open(pre / "peps.tar.gz") as tar:
        for m in tar:
            if m.isfile() and m.name.endswith((".rst", ".txt")):
                text = tar.extractfile(m).read().decode("utf-8", "replace")
                if len(text.split()) >= MIN_WORDS:
                    peps.append(_good("peps", Path(m.name).stem, text))
    take(peps)
    play = (pre / "tinyshakespeare.txt").read_text(encoding="utf-8")
    speeches, scenes, cur = play.split("\n\n"), [], []
    for sp in speeches:  # about 3,000 words a document: a long scene's worth
        cur.append(sp)
        if sum(len(s.split()) for s in cur) >= 3000:
            scenes.append("\n\n".join(cur))
            cur = []
    take([_good("shakespeare", j, s) for j, s in enumerate(scenes)])
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = []
    for p in sorted(stdlib.rglob("*.py")):
        rel = p.relative_to(stdlib).as_posix()
        if "test" in rel or "site-packages" in rel or "idlelib" in rel:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.count("\n") >= 20:
            code.append(_good("code", rel, text, "code"))
    take(code)
    return out


# ---------------------------------------------------------------- bad documents
NAV = ["Home", "About us", "Contact", "Log in", "Sign up", "Search", "Menu", "Blog", "News", "Shop", "Cart (0)",
       "My account", "Help", "FAQ", "Careers", "Press", "Privacy", "Terms", "Sitemap", "Subscribe", "Follow us",
       "Facebook", "Twitter", "Instagram", "Share", "Next »", "« Previous", "Back to top", "Read more", "Categories",
       "Archives", "Tags", "Recent posts", "Popular", "Login / Register", "Skip to content", "Main menu"]
FOOTER = ["© {y} {site}. All rights reserved.", "Powered by WordPress", "This site uses cookies to improve your experience.",
          "Accept all cookies", "Terms of use | Privacy policy | Cookie policy", "Designed by {site} Media",
          "Please enable JavaScript to view this page.", "Subscribe to our newsletter", "Copyright {y} {site} Inc."]
SPAM = ["Click here to read more", "You won't believe what happened next", "Best price guaranteed", "Limited offer",
        "Buy now and save", "Free shipping on all orders", "Top 10 tips for", "Don't miss out", "Amazing deals on",
        "Hot new", "Discover the secret of", "Earn money fast with", "See all", "Watch the video of"]
SHORT = ["404 Not Found. The page you requested could not be found on this server.",
         "Access denied. You do not have permission to view this page.", "Page not found. Return to the home page.",
         "This domain is for sale. Contact the owner for more information.", "Loading... please wait.",
         "Your session has expired. Please log in again to continue.", "Coming soon! Our new website is under construction.",
         "Error 500: internal server error. Please try again later."]
LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna "
         "aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis "
         "aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat "
         "non proident sunt culpa qui officia deserunt mollit anim id est laborum perspiciatis unde omnis iste natus error "
         "accusantium doloremque laudantium totam rem aperiam eaque ipsa quae ab illo inventore veritatis").split()
SITES = ["example", "bestdeals", "mysite", "newsportal", "shopnow", "traveltips", "webhub", "citypages"]
STOP = {"the", "be", "to", "of", "and", "that", "have", "with", "a", "an", "in", "is", "it", "for", "on", "as", "was"}


def _vocab(text: str, rng: random.Random, n: int = 400) -> list[str]:
    ws = [w.strip(".,;:!?()[]\"'“”‘’").lower() for w in text.split()[:20000]]
    ws = sorted({w for w in ws if w.isalpha() and len(w) > 3})
    return rng.sample(ws, min(n, len(ws))) or ["widget"]


def _sentences(text: str) -> list[str]:
    sents = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split()[:6000])) if len(s.split()) >= 6]
    return sents or [" ".join(text.split()[:30]) + "."]


def _paragraphs(text: str) -> list[str]:
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 30]
    return paras or [" ".join(text.split()[:80])]


def _excerpt(text: str, rng: random.Random, words: int) -> list[str]:
    ws = text.split()
    start = rng.randrange(max(1, len(ws) - words))
    return ws[start : start + words]


def gen_menu(text, rng):
    site = rng.choice(SITES)
    lines = rng.sample(NAV, rng.randint(12, 25))
    lines += [rng.choice(_sentences(text))]  # a teaser sentence, as index pages have
    lines += rng.sample(NAV, rng.randint(8, 15))
    lines += [f.format(y=rng.randint(2005, 2025), site=site.title()) for f in rng.sample(FOOTER, 4)]
    return "\n".join(lines)


def gen_keywords(text, rng):
    v = _vocab(text, rng)
    mods = ["cheap", "best", "buy", "online", "free", "top", "discount", "near me", "review", "2024", "sale", "deals"]
    kws = [f"{rng.choice(mods)} {rng.choice(v)}" if rng.random() < 0.7 else f"{rng.choice(v)} {rng.choice(mods)}"
           for _ in range(rng.randint(80, 200))]
    sep = rng.choice([", ", " | ", "\n", " "])
    return ("Tags: " if rng.random() < 0.5 else "") + sep.join(kws)


def gen_links(text, rng):
    v = _vocab(text, rng)
    lines = []
    for _ in range(rng.randint(25, 60)):
        title = " ".join(rng.choice(v).title() for _ in range(rng.randint(2, 5)))
        url = f"https://www.{rng.choice(SITES)}.com/{'-'.join(rng.sample(v, 3))}/{rng.randint(100, 99999)}.html"
        lines.append(rng.choice([f"{title} - {url}", f"{url}", f"[{title}]({url})", f"» {title}"]))
    return "\n".join(lines)


def gen_repeated_lines(text, rng):
    s = rng.sample(_sentences(text), k=min(3, len(_sentences(text))))
    body = [rng.choice(s) for _ in range(rng.randint(15, 40))]
    return "\n".join(body + _sentences(text)[:3])


def gen_repeated_paragraphs(text, rng):
    p = rng.choice(_paragraphs(text))
    other = rng.choice(_paragraphs(text))
    return "\n\n".join([other] + [p] * rng.randint(4, 9))


def gen_lorem(text, rng):
    ws = [rng.choice(LOREM) for _ in range(rng.randint(150, 500))]
    sents, i = [], 0
    while i < len(ws):
        n = rng.randint(6, 15)
        sents.append(" ".join(ws[i : i + n]).capitalize() + ".")
        i += n
    if rng.random() < 0.5:
        sents[0] = "Lorem ipsum dolor sit amet, consectetur adipiscing elit."
    return " ".join(sents)


def gen_shuffled(text, rng):
    ws = _excerpt(text, rng, rng.randint(200, 800))
    rng.shuffle(ws)
    return " ".join(ws)


def gen_char_soup(text, rng):
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#$%^&*()_+-=[]{}|;:,.<>?/~`"
    toks = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(150, 500))]
    return " ".join(toks)


def gen_mt(text, rng):
    """Machine-translated-looking: content words of real sentences in scrambled local order,
    function words dropped or doubled, sentence-initial capital kept."""
    out = []
    for s in rng.sample(_sentences(text), k=min(len(_sentences(text)), rng.randint(15, 40))):
        ws = [w.strip(".,;:!?") for w in s.split()]
        ws = [w for w in ws if w and (w.lower() not in STOP or rng.random() < 0.3)]
        for i in range(0, len(ws) - 2, 3):  # swap neighbours
            if rng.random() < 0.7:
                ws[i], ws[i + 1] = ws[i + 1], ws[i]
        if ws:
            if rng.random() < 0.4:
                k = rng.randrange(len(ws))
                ws.insert(k, ws[k])
            out.append(ws[0][:1].upper() + " ".join(ws)[1:] + rng.choice([".", ".", " .", "!"]))
    return " ".join(out)


def gen_numbers(text, rng):
    cols = rng.randint(4, 9)
    head = " | ".join(rng.sample(_vocab(text, rng), min(cols, 5)))
    rows = [" | ".join(str(round(rng.uniform(0, 10 ** rng.randint(1, 5)), rng.choice([0, 1, 2]))) for _ in range(cols))
            for _ in range(rng.randint(30, 120))]
    return "\n".join([head] + rows)


def gen_short(text, rng):
    return rng.choice(SHORT) + (" " + rng.choice(_sentences(text)) if rng.random() < 0.5 else "")


def gen_bullet_spam(text, rng):
    v = _vocab(text, rng)
    bullet = rng.choice(["•", "-", "*", "–"])
    return "\n".join(f"{bullet} {rng.choice(SPAM)} {rng.choice(v)} {rng.choice(v)}..." for _ in range(rng.randint(20, 60)))


def gen_code_minified(code, rng):
    lines = [ln.strip() for ln in code.split("\n") if ln.strip() and not ln.strip().startswith("#")]
    return ";".join(lines)


def gen_code_autogen(code, rng):
    head = rng.choice(["# -*- coding: utf-8 -*-\n# Generated by the protocol buffer compiler.  DO NOT EDIT!",
                       "# This file was automatically generated by SWIG (http://www.swig.org).",
                       "# Auto-generated file, do not edit by hand.", "# Code generated by tool; DO NOT EDIT."])
    table = "\n".join(f"_DATA_{i} = {[rng.randint(0, 255) for _ in range(12)]}" for i in range(rng.randint(30, 100)))
    return f"{head}\n{table}\n"


def gen_code_symbols(code, rng):
    art = "".join(rng.choice("=-+*#|/\\_~^<>[]{}();:.,") for _ in range(rng.randint(40, 120)))
    return "\n".join(f"# {art}" if rng.random() < 0.5 else art for _ in range(rng.randint(30, 80)))


PROSE_BAD = {"menu": gen_menu, "keywords": gen_keywords, "links": gen_links, "repeated_lines": gen_repeated_lines,
             "repeated_paragraphs": gen_repeated_paragraphs, "lorem_ipsum": gen_lorem, "shuffled_words": gen_shuffled,
             "char_soup": gen_char_soup, "mt_fragments": gen_mt, "number_table": gen_numbers, "short_page": gen_short,
             "bullet_spam": gen_bullet_spam}
CODE_BAD = {"code_minified": gen_code_minified, "code_autogenerated": gen_code_autogen, "code_symbol_art": gen_code_symbols}


def bad_docs(good: list[dict], per_generator: int = 60, rng: random.Random | None = None) -> list[dict]:
    """`per_generator` junk documents of each kind, each made from a random good donor of the
    matching kind (prose donors for prose junk, code for code junk)."""
    rng = rng or random.Random(1)
    prose = [d for d in good if d["kind"] == "prose"]
    code = [d for d in good if d["kind"] == "code"]
    out = []
    for gens, donors, kind in ((PROSE_BAD, prose, "prose"), (CODE_BAD, code, "code")):
        if not donors:
            continue
        for name, fn in gens.items():
            for i in range(per_generator):
                donor = rng.choice(donors)
                out.append({"id": f"bad/{name}/{i}", "text": fn(donor["text"], rng), "label": "bad",
                            "source": "bad_code" if kind == "code" else "bad_prose", "kind": kind, "generator": name,
                            "split": donor["split"], "donor": donor["id"]})
    return out


def build(shared: Path = SHARED, per_source: int = 600, per_generator: int = 60, seed: int = 0,
          max_chars: int | None = None) -> list[dict]:
    """The whole labelled set: good documents then bad ones, deterministic for a seed."""
    good = good_docs(shared, per_source, random.Random(seed), max_chars)
    return good + bad_docs(good, per_generator, random.Random(seed + 1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--per-source", type=int, default=600)
    ap.add_argument("--per-generator", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    docs = build(a.shared, a.per_source, a.per_generator, a.seed)
    tmp = a.out.with_name(f".{a.out.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    tmp.replace(a.out)
    print(f"{len(docs)} documents -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
