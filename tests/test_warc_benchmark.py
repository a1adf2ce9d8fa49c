"""benchmarks/warc.py's yardstick: the word precision/recall it reports, and pages whose
reference text is really on the page, in the bytes and charset the WARC says."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED = ROOT.parent / "shared" / "data" / "pretrain"


def test_word_precision_recall_by_hand():
    from warc import score

    pages = [{"url": "a", "reference": "The cat sat."}, {"url": "b", "reference": "Dogs bark loudly"}]
    # page a: output words the, cat, the, dog; 2 of 4 are reference words (the once, cat), 2 of 3 found
    # page b: no output at all
    s = score(pages, {"a": "the cat, the DOG"})
    assert (s["precision"], s["recall"]) == (0.5, round(2 / 6, 4))
    assert s["f1"] == round(2 * 0.5 * (2 / 6) / (0.5 + 2 / 6), 4)
    assert s["mean_page_f1"] == round((2 * 2 / (3 + 4) + 0.0) / 2, 4) and s["pages_without_text"] == 1


@pytest.mark.skipif(not (SHARED / "enwiki.jsonl.zst").exists(), reason="../shared/data is absent")
def test_pages_carry_their_reference_text(tmp_path):
    import lxml.html
    from warcio.archiveiterator import ArchiveIterator

    from warc_pages import CHARSETS, LAYOUTS, encode_page, load_sources, main_blocks, page_html, reference_text, write_split

    articles, paras = load_sources(12, 0)
    rng = random.Random(0)
    for i, layout in enumerate(LAYOUTS):
        for mode in CHARSETS:
            blocks = main_blocks(articles[i], rng)
            page = page_html(articles[i], blocks, articles[5:], paras[:8], rng, layout)
            raw, ctype, meta = encode_page(page, mode)
            # decoded with the charset the page declares (or UTF-8), entities resolved by lxml
            text = lxml.html.fromstring(raw.decode(mode.split(":")[0])).text_content()
            ref = reference_text(blocks)
            flat = " ".join(text.split())
            assert all(" ".join(line.split()) in flat for line in ref.split("\n")), (layout, mode)
            assert mode.endswith("none") or mode.split(":")[0] in (ctype + meta)
    pages = write_split(tmp_path / "s.warc.gz", articles[:8], paras, 1)
    with open(tmp_path / "s.warc.gz", "rb") as f:
        kinds = [r.rec_type for r in ArchiveIterator(f)]
    # warcinfo, a request and a response per page, two assets for every fourth page
    assert kinds.count("warcinfo") == 1 and kinds.count("request") == 8 and kinds.count("response") == 8 + 2 * 2
    assert len({p["url"] for p in pages}) == 8
