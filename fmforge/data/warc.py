"""WARC records to documents: which records are read, how an HTTP body is decoded
(transfer encoding, then content encodings), which charset it is in, and main-text
extraction (Resiliparse by default, trafilatura as FineWeb used; data.html_extractor).

Each record that gives no document is counted under a reason (stats.skip), so a WARC of
gzip bodies or browser-archived `resource` records never silently becomes garbage or nothing.
"""
from __future__ import annotations

import re
import zlib
from functools import partial
from pathlib import Path
from typing import Iterator

from fmforge.data.documents import make_doc
from fmforge.data.formats import DataError

READ_TYPES = ("response", "resource", "conversion")
SKIP_TYPES = ("revisit", "request", "metadata", "warcinfo")
TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


class BodyError(ValueError):
    pass


def dechunk(body: bytes) -> bytes:
    """HTTP/1.1 chunked transfer coding (RFC 9112 7.1); a missing last chunk is an error."""
    out, pos = bytearray(), 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise BodyError("chunked body ends before its last chunk")
        size_s = body[pos:end].split(b";")[0].strip()
        try:
            size = int(size_s, 16)
        except ValueError:
            raise BodyError(f"bad chunk size {size_s[:20]!r}") from None
        if size == 0:
            return bytes(out)
        start = end + 2
        if start + size > len(body):
            raise BodyError("chunk runs past the end of the body")
        out += body[start:start + size]
        pos = start + size + 2


def decode_content(body: bytes, coding: str) -> bytes:
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return body
    try:
        if coding == "br":
            import brotli

            return brotli.decompress(body)  # raises on a cut or damaged stream
        if coding in ("gzip", "x-gzip"):
            return _members(body, partial(zlib.decompressobj, 16 + zlib.MAX_WBITS), coding, b"\x1f\x8b")
        if coding == "deflate":  # zlib-wrapped per the RFC; raw deflate as servers often send
            wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
            return _members(body, partial(zlib.decompressobj, wbits), coding, None)
        if coding == "zstd":
            import zstandard

            return _members(body, zstandard.ZstdDecompressor().decompressobj, coding, b"\x28\xb5\x2f\xfd")
        raise BodyError(f"unknown content encoding {coding!r}")
    except BodyError:
        raise
    except Exception as e:
        raise BodyError(f"{coding}: {type(e).__name__}: {e}") from None


def _members(body: bytes, decompressor, coding: str, magic: bytes | None) -> bytes:
    """Every gzip member / zstd frame of the body: a server may send several, and one
    decompressor object stops after the first. A cut one is an error, not a short text;
    bytes after the last one that start no member (padding, junk) are ignored, as browsers do."""
    out = bytearray()
    while True:
        d = decompressor()
        out += d.decompress(body)
        if not d.eof:
            raise BodyError(f"{coding} body is truncated")
        body = d.unused_data
        if magic is None or not body.startswith(magic):
            return bytes(out)


def decode_body(body: bytes, headers) -> bytes:
    """Undo Transfer-Encoding, then each Content-Encoding in reverse order of application."""
    te = [t.strip().lower() for t in (headers.get("Transfer-Encoding") or "").split(",") if t.strip()]
    for t in reversed(te):
        body = dechunk(body) if t == "chunked" else decode_content(body, t)
    ce = [c for c in (headers.get("Content-Encoding") or "").split(",") if c.strip()]
    for c in reversed(ce):
        body = decode_content(body, c)
    return body


def charset_of(ctype_header: str, body: bytes, is_html: bool) -> str:
    """HTTP header charset, then the HTML meta tag, then detection (Resiliparse)."""
    import codecs

    from resiliparse.parse.encoding import detect_encoding

    candidates = []
    m = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", ctype_header, re.I)
    if m:
        candidates.append(m.group(1))
    if is_html:
        m2 = META_CHARSET.search(body[:4096])
        if m2:
            candidates.append(m2.group(1).decode("ascii", "ignore"))
    for c in candidates:
        try:
            name = codecs.lookup(c).name
        except LookupError:
            continue
        return "cp1252" if name in ("latin-1", "iso8859-1", "ascii") else name  # WHATWG: latin-1 means windows-1252
    return detect_encoding(body)


# Each extractor's settings: the best word F1 on the dev split of benchmarks/warc.py (docs/LOG.md,
# issue 17). Resiliparse keeps comment sections, bylines and image alt texts unless told not to;
# reader comments are the boilerplate that costs it most.
EXTRACTOR_OPTIONS = {
    "resiliparse": {"main_content": True, "comments": False, "post_meta": False, "alt_texts": False},
    "trafilatura": {"include_comments": False, "favor_precision": True},
}


def extract(html: str, extractor: str, options: dict | None = None) -> str:
    opts = EXTRACTOR_OPTIONS[extractor] if options is None else options
    if extractor == "trafilatura":
        import trafilatura

        return trafilatura.extract(html, **opts) or ""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, **opts)


def iter_warc_records(path: Path, stats, source: str, name: str, extractor: str = "resiliparse",
                      options: dict | None = None) -> Iterator[dict]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    # A document is handed out once the next record has been found (or the file ended): when
    # reading stops right after a record, its Content-Length may be what is wrong, and then its
    # text is cut short or carries the next record's header (see _ends_where_it_says).
    n, last_pos, pending = 0, 0, None
    with open(path, "rb") as f:
        try:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.any_type, parse_http=False):
                if pending is not None:
                    yield pending
                    pending = None
                n, last_pos = n + 1, rec.stream_pos
                wtype = (rec.headers.get("WARC-Type") or "").lower()
                url = rec.headers.get("WARC-Target-URI", "")
                where = f"{path}: record {n} ({url or wtype})"
                if rec.headers.get("Content-Length") is None:  # mandatory: the archive ends inside this header
                    stats.skip("truncated_file", f"{where}: header ends before Content-Length")
                    return
                if wtype not in READ_TYPES:
                    stats.ignore(f"warc_{wtype or 'unknown'}_record" if wtype in SKIP_TYPES else "warc_unknown_record", where)
                    continue
                raw = rec.reader.read()
                if len(raw) < rec.content_length:  # the archive ends inside this record
                    stats.skip("truncated_file", f"{where}: block has {len(raw)} of its {rec.content_length} bytes")
                    return
                doc = record_doc(wtype, rec.headers, raw, stats, where, extractor, options)
                if doc is None:
                    continue
                text, ctype = doc
                pending = make_doc(text, source, f"{name}:{rec.headers.get('WARC-Record-ID') or f'record:{n}'}", url=url,
                                   date=rec.headers.get("WARC-Date", ""), content_type=ctype,
                                   language=rec.headers.get("WARC-Identified-Content-Language", "") or "text",
                                   record_id=rec.headers.get("WARC-Record-ID", ""))
        except DataError:  # --strict: the first fault, as it was raised
            raise
        except Exception as e:  # FastWARC stops on truncated/corrupt archives
            cut = _gzip_tail_cut(f, last_pos)
            why = cut or f"{type(e).__name__}: {e}"
            if pending is not None:
                if not _ends_where_it_says(f, last_pos):  # a wrong length: this record is damaged too
                    stats.skip("truncated_file", f"{where}: its block does not end where its Content-Length says ({why})")
                    return
                yield pending
            if n == 0 and not cut:
                stats.skip("not_a_warc_file", f"{path}: {why}")
            else:
                stats.skip("truncated_file", f"{path}: after record {n}: {why}")
            return
        if pending is not None:
            yield pending
        # FastWARC ends quietly when a gzip member is cut before its first decompressed bytes
        cut = _gzip_tail_cut(f, last_pos)
    if cut:
        stats.skip("truncated_file", f"{path}: after record {n}: {cut}")
    elif n == 0:  # an empty file, or bytes with no WARC record in them: say so rather than 0 documents
        stats.skip("not_a_warc_file", f"{path}: no WARC record found")


def _ends_where_it_says(f, pos: int) -> bool:
    """Whether the record at `pos` is its header, Content-Length bytes of block and CRLF CRLF
    (WARC 1.1 section 4). Unknown (True) inside a file that is one gzip stream."""
    f.seek(0)
    gz = f.read(2) == b"\x1f\x8b"
    f.seek(pos)
    if gz:
        if f.read(2) != b"\x1f\x8b":
            return True
        f.seek(pos)
        d, rec = zlib.decompressobj(16 + zlib.MAX_WBITS), bytearray()
        try:
            while not d.eof and (chunk := f.read(1 << 20)):
                rec += d.decompress(chunk)
        except zlib.error:
            return False
    else:
        rec = f.read(1 << 16)  # the header; the block is seeked past below
    end = rec.find(b"\r\n\r\n")
    m = re.search(rb"\r\nContent-Length:[ \t]*(\d+)", rec[:end], re.I) if end >= 0 else None
    if m is None:
        return False
    block_end = end + 4 + int(m.group(1))
    if gz:  # the record is the whole member
        return rec[block_end:] == b"\r\n\r\n"
    f.seek(pos + block_end)
    return f.read(4) == b"\r\n\r\n"


def _gzip_tail_cut(f, pos: int) -> str:
    """Why the gzip members from `pos` (where the last record's member starts) to the end of the
    file are incomplete, or '' when they are whole or the file is not gzip. Streams one record's
    member; the whole file only when it is one gzip stream rather than a member per record."""
    f.seek(0)
    if f.read(2) != b"\x1f\x8b":
        return ""
    f.seek(pos)
    if f.read(2) != b"\x1f\x8b":
        pos = 0
    f.seek(pos)
    d, eof = zlib.decompressobj(16 + zlib.MAX_WBITS), True
    while chunk := f.read(1 << 20):
        while chunk:
            try:
                d.decompress(chunk)
            except zlib.error as e:
                return f"gzip data error: {e}"
            eof, chunk = d.eof, d.unused_data
            if d.eof:  # the next member starts in what is left
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return "" if eof else "the last gzip member is cut short"


def _http_split(raw: bytes):
    """Status line + headers of an HTTP response block, and its body."""
    end = raw.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = raw.find(b"\n\n"), 2
    if end < 0:
        raise BodyError("no end of HTTP headers")
    lines = raw[:end].decode("iso-8859-1").splitlines()
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().title()] = v.strip()
    return headers, raw[end + sep:]


def record_doc(wtype: str, wheaders, raw: bytes, stats, where: str, extractor: str, options: dict | None = None):
    from resiliparse.parse.encoding import bytes_to_str

    if wtype == "response" and "application/http" in (wheaders.get("Content-Type") or "").lower():
        try:
            headers, body = _http_split(raw)
            body = decode_body(body, headers)
        except BodyError as e:
            stats.skip("warc_undecodable_body", f"{where}: {e}")
            return None
        ctype_header = headers.get("Content-Type", "")
    else:  # resource / conversion: the block is the document itself
        body, ctype_header = raw, wheaders.get("Content-Type", "")
    ctype = ctype_header.split(";")[0].strip().lower()
    if ctype not in TEXT_TYPES:
        stats.ignore(f"warc_content_type:{ctype or 'none'}", where)
        return None
    is_html = ctype != "text/plain"
    html = bytes_to_str(body, charset_of(ctype_header, body, is_html))
    text = extract(html, extractor, options) if is_html else html
    return text, ctype
