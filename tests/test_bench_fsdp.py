"""benchmarks/fsdp_overhead.py, tiny on the CPU: it runs end to end, each case really used
its strategy (torchrun at world size 1 for FSDP/DDP), and the resumed runs repeat the
uninterrupted losses exactly."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_fsdp_overhead_benchmark_tiny_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fsdp_overhead.py"), "--device", "cpu", "--tiny",
                        "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=580)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (result,) = tmp_path.glob("fsdp_overhead-*-tiny.json")
    res = json.loads(result.read_text())
    assert res["benchmark"] == "fsdp_overhead" and res["commit"]
    cases = res["throughput"]["cases"]
    assert {c: cases[c]["strategy"] for c in cases} == {"plain": "single", "fsdp": "fsdp", "ddp": "ddp"}
    assert all(cases[c]["tokens_per_s"] > 0 and cases[c]["world"] == 1 for c in cases)
    rs = res["resume"]
    assert len(rs["full_losses"]) == 4
    assert rs["resumed_max_rel_diff"] == 0.0 and rs["resumed_plain_max_rel_diff"] == 0.0
    assert "COMPLETE" in rs["checkpoint_files"] and any(f.endswith(".distcp") for f in rs["checkpoint_files"])
    assert any("resumed from" in l for l in rs["resumed_plain_log"])
