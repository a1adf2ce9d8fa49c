"""WARC reading: HTTP encodings, record types, charsets; files written with warcio (the peer)."""
from __future__ import annotations

import gzip
import io
import json
import zlib

import pytest

pytest.importorskip("warcio")
from warcio.statusandheaders import StatusAndHeaders  # noqa: E402
from warcio.warcwriter import WARCWriter  # noqa: E402

from fmforge.data.collect import CollectStats  # noqa: E402
from fmforge.data.readers import iter_warc  # noqa: E402

PLAIN = "Grüße aus Köln, naïve café déjà vu."


def write_warc(path, records, gz=True):
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=gz)
        for kind, url, headers, body, *extra in records:
            warc_headers = extra[0] if extra else None  # e.g. WARC-Identified-Content-Language
            if kind == "response":
                http = StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1")
                rec = w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http,
                                           warc_headers_dict=warc_headers)
            else:
                rec = w.create_warc_record(url, kind, payload=io.BytesIO(body), warc_headers_dict=warc_headers,
                                           warc_content_type=dict(headers).get("Content-Type", "text/html"))
            w.write_record(rec)


def read(path, **kw):
    st = CollectStats(**kw)
    return list(iter_warc(path, st)), st


def chunked(b: bytes, n=7) -> bytes:
    parts = [b[i:i + n] for i in range(0, len(b), n)]
    return b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


def test_content_and_transfer_encodings(tmp_path):
    import brotli
    import zstandard

    body = PLAIN.encode("utf-8")
    ct = ("Content-Type", "text/plain; charset=utf-8")
    cases = {
        "identity": ([ct], body),
        "gzip": ([ct, ("Content-Encoding", "gzip")], gzip.compress(body)),
        "deflate": ([ct, ("Content-Encoding", "deflate")], zlib.compress(body)),
        "rawdeflate": ([ct, ("Content-Encoding", "deflate")], zlib.compress(body)[2:-4]),
        "br": ([ct, ("Content-Encoding", "br")], brotli.compress(body)),
        "zstd": ([ct, ("Content-Encoding", "zstd")], zstandard.ZstdCompressor().compress(body)),
        # a body of several gzip members / zstd frames (a decompressor object stops after the first)
        "gzip-2members": ([ct, ("Content-Encoding", "gzip")], gzip.compress(body[:9]) + gzip.compress(body[9:])),
        "zstd-2frames": ([ct, ("Content-Encoding", "zstd")],
                         zstandard.ZstdCompressor().compress(body[:9]) + zstandard.ZstdCompressor().compress(body[9:])),
        "chunked": ([ct, ("Transfer-Encoding", "chunked")], chunked(body)),
        "chunked+gzip": ([ct, ("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip")], chunked(gzip.compress(body))),
    }
    p = tmp_path / "enc.warc.gz"
    write_warc(p, [("response", f"https://e.org/{k}", h, b) for k, (h, b) in cases.items()])
    docs, st = read(p)
    assert [d["text"] for d in docs] == [PLAIN] * len(cases), st.skipped
    assert st.skipped == {}
    meta = json.loads(docs[0]["meta"]) if isinstance(docs[0]["meta"], str) else docs[0]["meta"]
    assert meta["url"] == "https://e.org/identity" and meta["content_type"] == "text/plain"
    assert meta["record_id"].startswith("<urn:uuid:") and meta["date"]


def _undecodable_cases():
    import brotli
    import zstandard

    text = (PLAIN * 40).encode()
    gz, br, zs = gzip.compress(text), brotli.compress(text), zstandard.ZstdCompressor().compress(text)
    return {  # coding header, body, what the example says
        "gzip-cut": ("Content-Encoding", "gzip", gz[:len(gz) // 2], "gzip body is truncated"),
        "deflate-damaged": ("Content-Encoding", "deflate", b"\x78\x9c" + b"\xff" * 40, "deflate: error: "),
        "br-cut": ("Content-Encoding", "br", br[:len(br) // 2], "br: error: "),
        "zstd-cut": ("Content-Encoding", "zstd", zs[:len(zs) // 2], "zstd body is truncated"),
        "zstd-junk": ("Content-Encoding", "zstd", b"\x00" * 40, "zstd: ZstdError: "),
        "unknown": ("Content-Encoding", "compress", b"\x1f\x9d\x90abc", "unknown content encoding 'compress'"),
        "chunk-size": ("Transfer-Encoding", "chunked", b"zz\r\nabc", "bad chunk size b'zz'"),
        "chunk-last": ("Transfer-Encoding", "chunked", b"5\r\nhello\r\n", "chunked body ends before its last chunk"),
        "chunk-overrun": ("Transfer-Encoding", "chunked", b"50\r\nhello\r\n0\r\n\r\n", "chunk runs past the end of the body"),
    }


@pytest.mark.parametrize("case", list(_undecodable_cases()))
def test_undecodable_bodies_counted(tmp_path, case):
    header, coding, body, says = _undecodable_cases()[case]
    ct = ("Content-Type", "text/plain")
    p = tmp_path / "bad.warc"
    write_warc(p, [("response", "https://e.org/ok1", [ct], b"fine text"),
                   ("response", f"https://e.org/{case}", [ct, (header, coding)], body),
                   ("response", "https://e.org/ok2", [ct], b"more text")], gz=False)
    docs, st = read(p)
    assert [d["text"] for d in docs] == ["fine text", "more text"]
    assert st.skipped == {"warc_undecodable_body": 1}
    assert st.examples["warc_undecodable_body"][0].startswith(f"{p}: record 2 (https://e.org/{case}): {says}")


@pytest.mark.parametrize("charset,header,meta", [
    ("latin-1", "text/html; charset=iso-8859-1", False),
    ("cp1252", "text/html; charset=windows-1252", False),
    ("shift_jis", "text/html", True),
    ("utf-8", "text/html", True),
    ("utf-8", "text/html", False),
])
def test_charsets(tmp_path, charset, header, meta):
    text = "日本語のテキストです。これは本文です。" if charset in ("shift_jis", "utf-8") else "Café crème – déjà “vu”" if charset == "cp1252" else "Café crème à Paris"
    if charset == "latin-1":
        text = "Café crème à Paris"
    head = f'<meta charset="{charset}">' if meta else ""
    html = f"<html><head>{head}<title>t</title></head><body><p>{text}</p></body></html>".encode(charset)
    p = tmp_path / "cs.warc.gz"
    write_warc(p, [("response", "https://e.org/", [("Content-Type", header)], html)])
    docs, st = read(p)
    assert [d["text"] for d in docs] == [text]
    docs[0]["text"].encode("utf-8")


def test_record_types(tmp_path):
    html = b"<html><body><p>A resource page body.</p></body></html>"
    p = tmp_path / "types.warc.gz"
    write_warc(p, [("resource", "https://e.org/r", [("Content-Type", "text/html")], html),
                   ("conversion", "https://e.org/c", [("Content-Type", "text/plain")], b"converted text"),
                   ("metadata", "https://e.org/m", [("Content-Type", "application/json")], b"{}"),
                   ("request", "https://e.org/q", [("Content-Type", "application/http")], b"GET / HTTP/1.1\r\n\r\n"),
                   ("response", "https://e.org/i.png", [("Content-Type", "image/png")], b"\x89PNG"),
                   ("response", "https://e.org/j", [("Content-Type", "application/json")], b"{}")])
    docs, st = read(p)
    assert [d["text"] for d in docs] == ["A resource page body.", "converted text"]
    assert st.skipped == {"warc_metadata_record": 1, "warc_request_record": 1,
                          "warc_content_type:image/png": 1, "warc_content_type:application/json": 1}


def warcio_headers(path, name):
    """One WARC header of every response/resource record, as warcio (the peer) reads the file."""
    from warcio.archiveiterator import ArchiveIterator

    with open(path, "rb") as f:
        return [r.rec_headers.get_header(name) for r in ArchiveIterator(f) if r.rec_type in ("response", "resource")]


def test_meta_keeps_url_date_type_language_record_id(tmp_path):
    p = tmp_path / "m.warc.gz"
    write_warc(p, [("response", "https://e.org/de", [("Content-Type", "text/html; charset=utf-8")],
                    "<html><body><p>Guten Tag.</p></body></html>".encode(), {"WARC-Identified-Content-Language": "deu"}),
                   ("resource", "https://e.org/x", [("Content-Type", "application/xhtml+xml")],
                    b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body><p>XHTML body.</p></body></html>')])
    docs, st = read(p)
    assert [d["text"] for d in docs] == ["Guten Tag.", "XHTML body."] and st.skipped == {}
    metas = [json.loads(d["meta"]) for d in docs]
    assert [m["url"] for m in metas] == ["https://e.org/de", "https://e.org/x"]
    assert [m["content_type"] for m in metas] == ["text/html", "application/xhtml+xml"]
    assert [m["record_id"] for m in metas] == warcio_headers(p, "WARC-Record-ID")
    assert [m["date"] for m in metas] == warcio_headers(p, "WARC-Date")
    # the crawler's language when it wrote one; else "text" (prose, as for a .txt file)
    assert [m["language"] for m in metas] == ["deu", "text"]


def _one_page(tmp_path, ctype, html: bytes) -> str:
    p = tmp_path / "cs.warc.gz"
    write_warc(p, [("response", "https://e.org/", [("Content-Type", ctype)], html)])
    docs, st = read(p)
    assert len(docs) == 1 and st.skipped == {}
    return docs[0]["text"]


@pytest.mark.parametrize("header,meta,read_as", [
    ("utf-8", "windows-1252", "utf-8"),  # the header wins over the meta tag ...
    ("windows-1252", "utf-8", "cp1252"),
    (None, "windows-1252", "cp1252"),  # ... and the meta tag over detection (the bytes are valid UTF-8)
    ("bogus-charset", "windows-1252", "cp1252"),  # a charset no codec knows is passed over
])
def test_charset_order(tmp_path, header, meta, read_as):
    text = "Café crème déjà vu à Paris"
    raw = text.encode("utf-8")
    html = b'<html><head><meta charset="' + meta.encode() + b'"></head><body><p>' + raw + b"</p></body></html>"
    ctype = "text/html" + (f"; charset={header}" if header else "")
    assert _one_page(tmp_path, ctype, html) == raw.decode(read_as)


@pytest.mark.parametrize("charset,text", [
    ("cp1252", "Les élèves étaient très fâchés contre le garçon qui a mangé la crêpe – «déjà» vu."),
    ("shift_jis", "東京都は日本の首都であり、多くの人が住んでいます。これは本文です。"),
    ("cp1251", "Москва является столицей России и крупнейшим по численности населения городом страны."),
])
def test_charset_detected_when_undeclared(tmp_path, charset, text):
    html = f"<html><head><title>t</title></head><body><p>{text}</p></body></html>".encode(charset)
    assert _one_page(tmp_path, "text/html", html) == text


def test_binary_body_reaches_prepare_and_is_removed(tmp_path):
    """A gzip body sent without Content-Encoding (a misconfigured server) is read as text;
    prepare's binary guard removes it under its own reason."""
    body = gzip.compress(("<html><body><p>" + "words of a page " * 200 + "</p></body></html>").encode(), mtime=0)
    p = tmp_path / "mislabelled.warc.gz"
    write_warc(p, [("response", "https://e.org/z", [("Content-Type", "text/html")], body)])
    docs, _ = read(p)
    assert len(docs) == 1
    text = docs[0]["text"]
    control = sum(ord(c) < 32 and c not in "\t\n\r\f" for c in text) / len(text)
    assert control > 0.01  # what the guard's default threshold removes
    kept, st = _run_stages(text)
    assert kept == [] and dict(st.removed) == {"binary_control_chars": 1}


def test_trafilatura_option(tmp_path):
    body = "<p>" + "This is the main article text of the page, long enough to be kept. " * 5 + "</p>"
    html = f"<html><body><nav>Home | About</nav><article>{body}</article><footer>Copyright</footer></body></html>"
    p = tmp_path / "t.warc.gz"
    write_warc(p, [("response", "https://e.org/", [("Content-Type", "text/html; charset=utf-8")], html.encode())])
    docs, _ = read(p, html_extractor="trafilatura")
    assert docs[0]["text"] == ("This is the main article text of the page, long enough to be kept. " * 5).strip()


def record_spans(path):
    """(offset, length) of each record, as warcio (the peer) reads the file."""
    from warcio.archiveiterator import ArchiveIterator

    spans = []
    with open(path, "rb") as f:
        it = ArchiveIterator(f)
        for rec in it:
            rec.content_stream().read()
            spans.append((it.get_record_offset(), it.get_record_length()))
    return spans


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file_keeps_earlier_records(tmp_path, gz):
    p = tmp_path / ("full.warc.gz" if gz else "full.warc")
    texts = [f"doc {i} " * 50 for i in range(3)]
    write_warc(p, [("response", f"https://e.org/{i}", [("Content-Type", "text/plain")], t.encode()) for i, t in enumerate(texts)], gz=gz)
    data, spans = p.read_bytes(), record_spans(p)
    ends = [o for o, _ in spans[1:]] + [len(data)]  # a plain record ends with CRLF CRLF after warcio's length
    assert len(spans) == 3 and all(o + n <= e <= o + n + 4 for (o, n), e in zip(spans, ends))
    for i, ((off, length), end) in enumerate(zip(spans, ends)):
        # inside the record's WARC header, in its body, and (gzip) in its member's trailer
        for cut in (off + 12, off + length // 2, end - 3 if gz else end - 40):
            c = tmp_path / f"cut{cut}.warc{'.gz' if gz else ''}"
            c.write_bytes(data[:cut])
            docs, st = read(c)
            whole = i + 1 if gz and cut == end - 3 else i  # only the gzip trailer is missing
            assert [d["text"] for d in docs] == texts[:whole], (cut, st.examples)
            assert st.skipped == {"truncated_file": 1}, (cut, st.examples)
            assert str(c) in st.examples["truncated_file"][0]
        # a file that ends cleanly between records is just a shorter archive
        c = tmp_path / f"end{i}.warc{'.gz' if gz else ''}"
        c.write_bytes(data[:end])
        docs, st = read(c)
        assert [d["text"] for d in docs] == texts[:i + 1] and st.skipped == {}


def test_corrupt_file_keeps_earlier_records(tmp_path):
    texts = [f"doc {i} " * 50 for i in range(3)]
    recs = [("response", f"https://e.org/{i}", [("Content-Type", "text/plain")], t.encode()) for i, t in enumerate(texts)]
    p = tmp_path / "full.warc.gz"
    write_warc(p, recs)
    data, spans = bytearray(p.read_bytes()), record_spans(p)
    off, length = spans[1]
    data[off + length // 2: off + length // 2 + 8] = b"\xff" * 8  # deflate data of record 2 damaged
    bad = tmp_path / "bad.warc.gz"
    bad.write_bytes(bytes(data))
    docs, st = read(bad)
    assert [d["text"] for d in docs] == texts[:1]
    assert st.skipped == {"truncated_file": 1} and "after record 1" in st.examples["truncated_file"][0]


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("damage", ["length+100", "length-100", "junk-between"])
def test_damaged_record_boundary(tmp_path, gz, damage):
    """A record whose Content-Length is wrong would give text cut short or carrying the next
    record's header: it is counted, not emitted. Junk after a whole record keeps that record."""
    import re

    texts = [f"doc {i} " * 50 for i in range(3)]
    p = tmp_path / ("full.warc.gz" if gz else "full.warc")
    write_warc(p, [("response", f"https://e.org/{i}", [("Content-Type", "text/plain")], t.encode()) for i, t in enumerate(texts)], gz=gz)
    data, spans = p.read_bytes(), record_spans(p)
    off, end = spans[1][0], spans[2][0]  # record 2, with the CRLF CRLF after a plain record's block
    rec = gzip.decompress(data[off:end]) if gz else data[off:end]
    if damage == "junk-between":
        rec += b"JUNK\r\n" * 3 if not gz else b""  # gzip: its own member, after record 2's
    else:
        n = int(re.search(rb"Content-Length: (\d+)", rec).group(1))
        rec = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % (n + int(damage[6:])), rec, count=1)
    bad = tmp_path / p.name.replace("full", "bad")
    junk = gzip.compress(b"JUNK\r\n" * 3) if gz and damage == "junk-between" else b""
    bad.write_bytes(data[:off] + (gzip.compress(rec) if gz else rec) + junk + data[end:])
    docs, st = read(bad)
    assert st.skipped == {"truncated_file": 1}
    ex = st.examples["truncated_file"][0]
    if damage == "junk-between":
        assert [d["text"] for d in docs] == texts[:2] and ex.startswith(f"{bad}: after record 2: ")
    else:
        assert [d["text"] for d in docs] == texts[:1]
        assert ex.startswith(f"{bad}: record 2 (https://e.org/1): its block does not end where its Content-Length says")


@pytest.mark.parametrize("name,content", [
    ("junk.warc", b"not a warc file at all\r\n" * 10),
    ("junk.warc.gz", gzip.compress(b"<html><body>an HTML page named .warc.gz</body></html>")),
    ("empty.warc", b""),
], ids=["text", "html-gz", "empty"])
def test_garbage_file_reason(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    docs, st = read(p)
    assert docs == [] and st.skipped == {"not_a_warc_file": 1}
    assert st.examples["not_a_warc_file"][0].startswith(f"{p}: ")


def test_revisit_and_warcinfo_skipped(tmp_path):
    p = tmp_path / "rv.warc.gz"
    with open(p, "wb") as f:
        w = WARCWriter(f, gzip=True)
        w.write_record(w.create_warcinfo_record("rv.warc.gz", {"software": "warcio", "format": "WARC File Format 1.0"}))
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/plain")], protocol="HTTP/1.1")
        first = w.create_warc_record("https://e.org/a", "response", payload=io.BytesIO(b"the page text"), http_headers=http)
        w.write_record(first)
        # the same page crawled again: a revisit record pointing at the first capture, no body of its own
        again = StatusAndHeaders("200 OK", [("Content-Type", "text/plain")], protocol="HTTP/1.1")
        w.write_record(w.create_revisit_record("https://e.org/a", digest=first.rec_headers.get_header("WARC-Payload-Digest"),
                                               refers_to_uri="https://e.org/a",
                                               refers_to_date=first.rec_headers.get_header("WARC-Date"), http_headers=again))
    docs, st = read(p)
    assert [d["text"] for d in docs] == ["the page text"]
    assert st.skipped == {"warc_warcinfo_record": 1, "warc_revisit_record": 1}
    assert st.examples["warc_revisit_record"][0] == f"{p}: record 3 (https://e.org/a)"
    assert st.examples["warc_warcinfo_record"][0] == f"{p}: record 1 (warcinfo)"


def test_collect_cli_counts(tmp_path):
    from typer.testing import CliRunner

    from fmforge.cli import app

    p = tmp_path / "c.warc.gz"
    write_warc(p, [("response", "https://e.org/a", [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")], gzip.compress(b"hello there")),
                   ("resource", "https://e.org/r", [("Content-Type", "text/html")], b"<html><body><p>resource text</p></body></html>"),
                   ("response", "https://e.org/p.png", [("Content-Type", "image/png")], b"\x89PNG")])
    r = CliRunner().invoke(app, ["data", "collect", str(p), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):])
    assert out["docs"] == 2 and out["skipped"] == {"warc_content_type:image/png": 1}


def test_collect_cli_html_extractor(tmp_path):
    from typer.testing import CliRunner

    from fmforge.cli import app
    from fmforge.config import RecipeError, load_recipe

    main = "This is the main article text of the page, long enough to be kept. " * 5
    html = f"<html><body><nav>Home | About | Contact</nav><article><p>{main}</p></article><footer>Copyright 2026</footer></body></html>"
    p = tmp_path / "t.warc.gz"
    write_warc(p, [("response", "https://e.org/", [("Content-Type", "text/html; charset=utf-8")], html.encode())])
    r = CliRunner().invoke(app, ["data", "collect", str(p), "--out", str(tmp_path / "out"), "--html-extractor", "trafilatura"])
    assert r.exit_code == 0, r.output
    import pyarrow.parquet as pq

    texts = [t for f in sorted((tmp_path / "out").glob("*.parquet")) for t in pq.read_table(f).column("text").to_pylist()]
    assert texts == [main.strip()]
    r = CliRunner().invoke(app, ["data", "collect", str(p), "--out", str(tmp_path / "o2"), "--html-extractor", "lxml"])
    assert r.exit_code == 2 and "--html-extractor" in r.output
    assert load_recipe(None, ["data.html_extractor=trafilatura"]).data.html_extractor == "trafilatura"
    with pytest.raises(RecipeError, match="html_extractor"):
        load_recipe(None, ["data.html_extractor=lxml"])


def _run_stages(text):
    from fmforge.config import DataConfig
    from fmforge.data.stages import Stages

    cfg = DataConfig(languages=[], gopher={"enabled": False}, repetition={"enabled": False}, c4={"enabled": False},
                     near_dedup={"enabled": False}, pii=[], min_chars=1)
    kept, st = Stages(cfg).run([{"id": "a", "text": text, "source": "s", "meta": "{}"}])
    return kept, st


@pytest.mark.parametrize("bad,reason", [("\x01", "binary_control_chars"), ("\ufffd", "binary_replacement_chars")])
def test_binary_guard_both_sides(bad, reason):
    # 1000 characters; the default threshold is a share of 0.01 = 10 characters
    at = "a" * 990 + bad * 10
    over = "a" * 989 + bad * 11
    kept, st = _run_stages(at)
    assert len(kept) == 1
    kept, st = _run_stages(over)
    assert kept == [] and st.removed[reason] == 1


def test_strict_stops_at_faults_not_at_records_that_are_not_documents(tmp_path):
    from fmforge.data.formats import DataError

    p = tmp_path / "crawl.warc.gz"
    write_warc(p, [("request", "https://e.org/a", [("Content-Type", "application/http")], b"GET /a HTTP/1.1\r\n\r\n"),
                   ("response", "https://e.org/a", [("Content-Type", "text/plain")], b"page a"),
                   ("response", "https://e.org/a.png", [("Content-Type", "image/png")], b"\x89PNG"),
                   ("response", "https://e.org/b", [("Content-Type", "text/plain")], b"page b " * 40)])
    docs, st = read(p, strict=True)
    assert [d["text"] for d in docs] == ["page a", "page b " * 40]
    assert st.skipped == {"warc_request_record": 1, "warc_content_type:image/png": 1}
    off, length = record_spans(p)[-1]
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(p.read_bytes()[:off + length // 2])
    with pytest.raises(DataError, match=r"^truncated_file: .*cut\.warc\.gz: record 4 \(https://e\.org/b\)"):
        read(cut, strict=True)
    one = tmp_path / "one.warc.gz"  # the whole archive as one gzip stream, not a member per record
    one.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())))
    docs, st = read(one)
    assert [d["text"] for d in docs] == ["page a", "page b " * 40] and "truncated_file" not in st.skipped
    one.write_bytes(one.read_bytes()[:-6])  # the stream's CRC and length trailer cut
    docs, st = read(one)
    assert len(docs) == 2 and st.skipped["truncated_file"] == 1
