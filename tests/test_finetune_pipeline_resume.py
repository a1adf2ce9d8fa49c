"""`fmforge run` with the finetune stage enabled, stopped by SIGTERM while fine-tuning and run
again: the data and pretraining stages are skipped as up to date and the finetune stage continues
from its checkpoint, ending as an uninterrupted run does (docs/finetune.md, "Checkpoints and resume")."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_recipe
from safetensors.torch import load_file

pytest.importorskip("peft")
ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ["collect", "prepare", "tokenizer", "train", "eval", "sample"]
FT = {"enabled": True, "data": "corpus-functions", "max_length": 64, "too_long": "drop", "max_steps": 6,
      "micro_batch": 4, "grad_accum": 2, "lr": 3e-3, "warmup_steps": 2, "lora": {"dropout": 0.1},
      "max_eval_examples": 8, "sample_prompts": 0, "device": "cpu", "checkpoint_every": 1}
# `fmforge run` whose finetune stage, once its step-2 checkpoint is saved, waits for a SIGTERM
# (at most 120 s): the test sends it from outside when it sees that checkpoint, so the stop comes
# at the same step on a fast or a loaded machine
WAIT_AFTER_STEP_2 = """
import signal, sys, time
from fmforge.finetune import checkpoint as ck
real = ck.Checkpoints.save
def save(self, model, opt, progress, device):
    # the loop's handler, read before the checkpoint's COMPLETE marker exists: the test signals as
    # soon as it sees the marker, and the handler restores the old one when signalled (read after
    # the save, a signal in between left this waiting on the restored one until the deadline)
    handler = signal.getsignal(signal.SIGTERM)
    path = real(self, model, opt, progress, device)
    if progress["step"] == 2:
        deadline = time.monotonic() + 60
        while signal.getsignal(signal.SIGTERM) is handler and time.monotonic() < deadline:
            time.sleep(0.01)
    return path
ck.Checkpoints.save = save
from fmforge.cli import main
sys.argv[0] = "fmforge"
main()
"""


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _run(recipe: Path):
    return subprocess.run([sys.executable, "-m", "fmforge", "run", "--recipe", str(recipe)], capture_output=True,
                          text=True, timeout=300, env=_env())


def _metrics(ft: Path) -> list[dict]:
    return [json.loads(line) for line in (ft / "metrics.jsonl").read_text().splitlines()]


def _stage_files(run_dir: Path) -> dict:
    """Every file of the stages before finetune, with its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for s in UPSTREAM for p in sorted((run_dir / s).rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.mark.timeout(300)
def test_sigterm_during_the_finetune_stage_then_fmforge_run_resumes_it(tmp_path, corpus_dir):
    recipe = write_recipe(tmp_path / "recipe.yaml", corpus_dir, tmp_path / "runs", finetune=FT)
    run_dir = tmp_path / "runs" / "t"
    ft = run_dir / "finetune"

    # 1. stopped by SIGTERM during fine-tuning, after its step-2 checkpoint
    proc = subprocess.Popen([sys.executable, "-c", WAIT_AFTER_STEP_2, "run", "--recipe", str(recipe)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 240
        while not (ft / "checkpoints" / "step-00000002" / "COMPLETE").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no fine-tuning checkpoint"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "training stopped by SIGTERM" in err and "Traceback" not in err
    assert "[finetune] done" not in err and not (ft / "stage.json").exists()
    # the loop ran step 3 and saved it on the way out (one checkpoint is kept)
    assert [p.name for p in (ft / "checkpoints").glob("step-*")] == ["step-00000003"]
    assert [m["step"] for m in _metrics(ft)] == [1, 2, 3]
    for s in UPSTREAM:  # the stages before finetune finished
        assert (run_dir / s / "stage.json").is_file(), s
    before = _stage_files(run_dir)

    # 2. the same command again: only the finetune stage runs, from its checkpoint
    r = _run(recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    for s in UPSTREAM:
        assert f"[{s}] up to date, skipped" in r.stderr, s
    assert "[finetune] resuming the interrupted run" in r.stderr
    assert f"resuming from {ft / 'checkpoints' / 'step-00000003'} (step 3)" in r.stderr
    assert "step 1/6" not in r.stderr and "(from the checkpoint)" in r.stderr  # no step, no base eval again
    assert _stage_files(run_dir) == before  # earlier stages' outputs untouched
    stage = json.loads((ft / "stage.json").read_text())
    assert stage["summary"]["steps"] == 6
    report = json.loads((run_dir / "report.json").read_text())
    assert report["stages"]["finetune"]["skipped"] is False
    assert all(report["stages"][s]["skipped"] for s in UPSTREAM)

    # 3. the same recipe uninterrupted, on the same upstream stages copied to another folder
    ref_dir = tmp_path / "ref" / "t"
    for s in UPSTREAM:
        shutil.copytree(run_dir / s, ref_dir / s, ignore=shutil.ignore_patterns(".lock"))
    ref_recipe = write_recipe(tmp_path / "ref.yaml", corpus_dir, tmp_path / "ref", finetune=FT)
    r = _run(ref_recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[train] up to date, skipped" in r.stderr and "resuming" not in r.stderr
    ref = ref_dir / "finetune"

    got, want = _metrics(ft), _metrics(ref)
    assert [m["step"] for m in got] == [m["step"] for m in want] == list(range(1, 7))
    for key in ("loss", "lr", "grad_norm", "tokens"):
        assert [m[key] for m in got] == pytest.approx([m[key] for m in want], rel=1e-6), key
    wa, wb = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (ref, ft))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-6, atol=1e-9)
    ra, rb = (json.loads((d / "finetune_report.json").read_text()) for d in (ref, ft))
    assert rb["tuned_eval_loss"] == pytest.approx(ra["tuned_eval_loss"], rel=1e-6)
    assert rb["base_eval_loss"] == ra["base_eval_loss"] and rb["steps"] == ra["steps"] == 6
