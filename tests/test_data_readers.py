"""Readers on real files and on crafted bad input: every bad record is counted with its
file and line, never a crash; --strict turns the first one into an error."""
from __future__ import annotations

import gzip
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from fmforge.data import readers
from fmforge.data.collect import CollectStats, DataError, collect
from fmforge.data.documents import read_docs
from tests.conftest import SHARED


def read(path, **kw):
    stats = CollectStats(**kw)
    return list(readers.iter_file(path, stats)), stats


def bad_jsonl_bytes() -> bytes:
    lines = [json.dumps({"text": "first good document", "url": "a"}).encode(),
             b'{"text": "unterminated',
             json.dumps({"text": 42}).encode(),
             json.dumps(["not", "an", "object"]).encode(),
             json.dumps({"body": "no text field"}).encode(),
             b"",
             json.dumps({"text": "nul \u0000 inside"}).encode(),
             b'{"text": "bad utf8 \xff\xfe here"}',
             b'{"text": "raw nul \x00 byte"}',
             json.dumps({"text": "last good document"}).encode()]
    return b"\n".join(lines) + b"\n"


def test_jsonl_bad_lines_are_counted_with_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(bad_jsonl_bytes())
    docs, stats = read(p)
    texts = [d["text"] for d in docs]
    assert texts[0] == "first good document" and texts[-1] == "last good document"
    assert "bad utf8 \ufffd\ufffd here" in texts and "nul \x00 inside" in texts
    assert stats.skipped == {"malformed_json": 2, "missing_text": 3, "invalid_utf8_replaced": 1}
    assert "bad.jsonl:2: " in stats.examples["malformed_json"][0]
    # each example says what is wrong: where the JSON breaks, and why a record gave no text
    # line 2's string runs into the line's end: the newline right after its 22 characters
    cut = len(b'{"text": "unterminated') + 1
    assert stats.examples["malformed_json"][0].endswith(f"(column {cut})")
    assert [e.split("/")[-1] for e in stats.examples["missing_text"]] == ["bad.jsonl:3: field 'text' is a number, not a string",
                                              "bad.jsonl:4: the record is an array, not an object",
                                              "bad.jsonl:5: no field 'text'"]
    assert json.loads(docs[0]["meta"]) == {"path": "bad.jsonl:line:1", "url": "a"}
    with pytest.raises(DataError, match="bad.jsonl:2"):
        read(p, strict=True)


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_compressed_files(tmp_path, suffix):
    body = b"".join(json.dumps({"text": f"document number {i} " * 20}).encode() + b"\n" for i in range(2000))
    packed = gzip.compress(body) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(body)
    p = tmp_path / f"cut{suffix}"
    p.write_bytes(packed[: len(packed) // 2])
    docs, stats = read(p)
    assert 0 < len(docs) < 2000 and stats.skipped.get("truncated_file") == 1
    assert "after line" in stats.examples["truncated_file"][0]


def test_huge_line_is_skipped_in_bounded_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_LINE_CHARS", 1000)
    p = tmp_path / "big.jsonl"
    p.write_text(json.dumps({"text": "x" * 5000}) + "\n" + json.dumps({"text": "after the big one"}) + "\n")
    docs, stats = read(p)
    assert [d["text"] for d in docs] == ["after the big one"]
    assert stats.skipped == {"line_too_long": 1} and "big.jsonl:1" in stats.examples["line_too_long"][0]


def test_parquet_and_corrupt_parquet(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"content": ["alpha text", None, "gamma text"], "lang": ["en", "en", "fr"]}), p)
    stats = CollectStats()
    docs = list(readers.iter_file(p, stats, text_field="content"))
    assert [d["text"] for d in docs] == ["alpha text", "gamma text"] and stats.skipped == {"missing_text": 1}
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    assert read(bad)[1].skipped == {"corrupt_file": 1}


def test_hf_save_to_disk_folder(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    table = pa.table({"text": ["one document", "two documents"], "label": [0, 1]})
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (folder / "dataset_info.json").write_text("{}")
    stats = collect([str(folder)], ["*"], tmp_path / "out")
    docs = list(read_docs(tmp_path / "out"))
    assert stats.docs == 2 and [d["text"] for d in docs] == ["one document", "two documents"]
    assert json.loads(docs[1]["meta"])["label"] == 1


def test_hf_datasets_library_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a real one", "b real two"]}).save_to_disk(str(tmp_path / "ds"))
    assert collect([str(tmp_path / "ds")], ["*"], tmp_path / "out").docs == 2


def warc_record(url: str, ctype: str, body: bytes) -> bytes:
    http = b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\nWARC-Date: 2024-01-02T03:04:05Z\r\n"
            f"WARC-Record-ID: <urn:uuid:{abs(hash(url))}>\r\nContent-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(http)}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


def test_warc_gz_html_to_main_text(tmp_path):
    html = (b"<html><head><title>t</title><script>var x = 1;</script></head><body><nav>Home | About</nav>"
            b"<article><p>The lighthouse keeper climbed the stairs every evening to light the lamp.</p>"
            b"<p>Ships passing the rocks were grateful for the beam.</p></article></body></html>")
    p = tmp_path / "crawl.warc.gz"
    with open(p, "wb") as f:
        for rec in (warc_record("https://example.org/a", "text/html; charset=utf-8", html),
                    warc_record("https://example.org/b.png", "image/png", b"\x89PNG...")):
            f.write(gzip.compress(rec))
    docs, stats = read(p)
    assert len(docs) == 1 and "lighthouse keeper" in docs[0]["text"] and "var x" not in docs[0]["text"]
    meta = json.loads(docs[0]["meta"])
    assert meta["url"] == "https://example.org/a" and meta["date"].startswith("2024-01-02")
    assert stats.skipped == {"warc_content_type:image/png": 1}


def test_tar_gz_of_text_files_and_folder_skips(tmp_path):
    p = tmp_path / "docs.tar.gz"
    with tarfile.open(p, "w:gz") as tar:
        for name, data in (("a/pep-0001.rst", "PEP text\n".encode()), ("a/logo.png", b"\x89PNG\0\0"),
                           ("a/bin.txt", b"abc\0def"), ("a/latin1.txt", "caf\xe9".encode("latin-1"))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    docs, stats = read(p)
    assert [json.loads(d["meta"])["path"] for d in docs] == ["docs.tar.gz:a/pep-0001.rst"]
    assert stats.skipped == {"not_text": 1, "binary": 1, "invalid_utf8": 1}


def test_unreadable_and_binary_files_in_folders(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ok.py").write_text("print('hello')\n")
    (tmp_path / "src" / "bin.py").write_bytes(b"\0\1\2")
    (tmp_path / "src" / "bad.py").write_bytes(b"x = '\xff'\n")
    stats = collect([str(tmp_path / "src")], ["*.py"], tmp_path / "out")
    assert stats.docs == 1 and stats.skipped == {"binary": 1, "invalid_utf8": 1}
    with pytest.raises(DataError):
        collect([str(tmp_path / "src")], ["*.py"], tmp_path / "out2", strict=True)


def test_real_shared_data_readers(tmp_path):
    files = [SHARED / "pretrain" / n for n in ("enwiki.jsonl.zst", "peps.tar.gz", "tinyshakespeare.txt")]
    if not all(f.exists() for f in files):
        pytest.skip(f"shared data absent: {SHARED}")
    stats = CollectStats()
    first = next(readers.iter_file(files[0], stats))
    assert json.loads(first["meta"])["meta"]["title"] and len(first["text"]) > 100
    peps = list(readers.iter_file(files[1], stats))
    assert len(peps) > 600 and all(json.loads(d["meta"])["language"] == "rst" for d in peps)
    (shakespeare,) = readers.iter_file(files[2], stats)
    assert "ROMEO" in shakespeare["text"] and not stats.skipped
