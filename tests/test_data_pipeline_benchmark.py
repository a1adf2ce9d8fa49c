"""benchmarks/data_pipeline.py, tiny: every round holds both systems' figures, the ratios and
their mean/min/max are those of the rounds, fmforge runs the `fineweb` preset, and the peers'
versions are recorded."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT.parent / "shared" / "data" / "pretrain"


def _xxhash_ok() -> bool:  # datatrove's MinHash passes str to xxhash, which xxhash 4 refuses
    try:
        import xxhash
    except ImportError:
        return False
    return int(xxhash.VERSION.split(".")[0]) < 4


@pytest.mark.skipif(not (PRETRAIN / "books.jsonl.zst").exists(), reason="../shared/data is absent")
@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("datatrove", "spacy", "orjson")) or not _xxhash_ok(),
                    reason="needs the bench extra (datatrove[io,processing] with xxhash<4, spacy)")
def test_tiny_run_rounds_and_spread(tmp_path):  # ~15 s on 2 quiet cores
    out = tmp_path / "dp.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "data_pipeline.py"), "--limit-mb", "0.5",
                        "--planted", "5", "--repeats", "2", "--workers", "1", "--tasks", "1",
                        "--work", str(tmp_path / "work"), "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["benchmark"] == "data_pipeline" and r["args"]["repeats"] == 2 and "--repeats" in r["argv"]
    assert {"commit", "dirty", "date"} <= set(r)
    assert r["versions"]["datatrove"] and r["versions"]["spacy"]
    assert r["fmforge_settings"]["filters"] == "fineweb"
    assert not (tmp_path / "work").exists()  # the scratch folder is removed

    mb, rounds = r["corpus"]["mb"], r["rounds"]
    assert 0.3 < mb < 1.5 and r["corpus"]["planted_pairs"] == 5
    assert [rd["round"] for rd in rounds] == [0, 1]
    assert rounds[0]["order"] == ["fmforge", "datatrove"] and rounds[1]["order"] == ["datatrove", "fmforge"]

    want: dict[str, list[float]] = {"end_to_end_mb_per_s_per_core": [], "filters_mb_per_cpu_s": [],
                                    "minhash_signature_mb_per_cpu_s": []}
    for rd in rounds:
        fm, dt = rd["fmforge"], rd["datatrove"]
        assert fm["end_to_end_mb_per_s_per_core"] == pytest.approx(mb / fm["end_to_end_seconds"])  # 1 worker
        assert dt["end_to_end_mb_per_s_per_core"] == pytest.approx(mb / dt["end_to_end_seconds"])
        want["end_to_end_mb_per_s_per_core"].append(dt["end_to_end_seconds"] / fm["end_to_end_seconds"])
        s = {k: v["seconds"] for k, v in fm["stages_single_core"].items()}
        fm_filters = mb / (s["words (shared tokenisation)"] + s["gopher_quality"] + s["gopher_repetition"] + s["c4"])
        blocks = dt["filter_blocks_cpu_seconds"]
        dt_filters = mb / sum(blocks[k] for k in blocks if "Gopher" in k or "C4" in k)
        want["filters_mb_per_cpu_s"].append(fm_filters / dt_filters)
        fm_sig = mb / (s["words (shared tokenisation)"] + s["minhash_signature"])
        want["minhash_signature_mb_per_cpu_s"].append(
            fm_sig / (dt["minhash_signature_input_mb"] / dt["minhash_signature_cpu_seconds"]))
        assert 0 < dt["minhash_signature_input_mb"] <= mb
        for system in (fm, dt):
            nd = system["near_dup"]
            assert 0 <= nd["recall"] <= 1 and 0 <= nd["precision"] <= 1 and nd["planted_pairs_eligible"] <= 5
        assert 0 <= rd["filter_agreement"] <= 1

    for name, xs in want.items():
        got = r["summary"]["ratios"][name]
        assert [rd["ratios"][name] for rd in rounds] == pytest.approx(xs)
        assert got["runs"] == pytest.approx(xs)
        assert got["mean"] == pytest.approx(sum(xs) / 2)
        assert got["min"] == pytest.approx(min(xs)) and got["max"] == pytest.approx(max(xs))
    agree = [rd["filter_agreement"] for rd in rounds]
    assert r["summary"]["filter_agreement"]["mean"] == pytest.approx(sum(agree) / 2)
    assert r["summary"]["filter_agreement"]["min"] == min(agree)
    for system in ("fmforge", "datatrove"):
        for k in ("recall", "precision"):
            xs = [rd[system]["near_dup"][k] for rd in rounds]
            got = r["summary"]["near_dup"][system][k]
            assert got["mean"] == pytest.approx(sum(xs) / 2) and (got["min"], got["max"]) == (min(xs), max(xs))
    assert r["speedup_end_to_end"] == pytest.approx(sum(want["end_to_end_mb_per_s_per_core"]) / 2)
