"""Data stages past one process: Ray gives the local executor's output, bit for bit; the
progress line says what a long job is doing."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from fmforge.progress import Progress


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*-*.bin"))}


@pytest.mark.timeout(300)
def test_prepare_and_encode_on_a_local_ray_cluster_match_the_local_executor(prepared, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    pytest.importorskip("datatrove", reason="the ray extra is not installed")
    import ray

    from fmforge.config import DataConfig, TokenizerConfig
    from fmforge.data.documents import read_docs
    from fmforge.data.prepare import prepare
    from fmforge.tokenizer.bpe import train_bpe
    from fmforge.tokenizer.encode import encode_corpus

    cfg = DataConfig(workers=2, languages=[])
    prepare(prepared, tmp_path / "local", cfg)
    tok = train_bpe((d["text"] for d in read_docs(tmp_path / "local")), TokenizerConfig(vocab_size=400), tmp_path / "tok")
    encode_corpus(tok, tmp_path / "local", tmp_path / "enc-local", 0.2, 0, workers=2, chunk_bytes=100_000)
    # one Ray instance with two worker processes for both stages: a cluster of one node
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    try:
        prepare(prepared, tmp_path / "ray", cfg.model_copy(update={"executor": "ray"}))
        encode_corpus(tok, tmp_path / "ray", tmp_path / "enc-ray", 0.2, 0, workers=2, chunk_bytes=100_000,
                      executor="ray")
    finally:
        ray.shutdown()
    assert [d["id"] for d in read_docs(tmp_path / "ray")] == [d["id"] for d in read_docs(tmp_path / "local")]
    local, on_ray = digest(tmp_path / "enc-local"), digest(tmp_path / "enc-ray")
    assert len(local) > 2 and on_ray == local


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_progress_line_reports_rate_and_time_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("fmforge.progress.time.perf_counter", lambda: now[0])
    out = FakeTTY()
    bar = Progress("prepare", units=4, total_bytes=40_000_000, stream=out, every=10)
    now[0] = 110.0
    bar.update(10_000_000, 500)  # 10 MB and 500 docs in 10 s: 1 MB/s, 50 docs/s, 30 MB left = 30 s
    assert out.getvalue() == ("[prepare] 1/4 tasks  10/40 MB  1.0 MB/s  50 docs/s  elapsed 0:10  left 0:30\n")
    now[0] = 112.0
    bar.update(10_000_000, 500)  # under `every` seconds since the last line: nothing printed
    assert out.getvalue().count("\n") == 1
    now[0] = 140.0
    bar.update(20_000_000, 1000, units=2)  # the last one is always printed
    assert out.getvalue().splitlines()[-1] == ("[prepare] 4/4 tasks  40/40 MB  1.0 MB/s  50 docs/s  elapsed 0:40  "
                                               "left 0:00")
