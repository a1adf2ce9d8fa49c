"""Fine-tuning checkpoints: a run stopped (SIGTERM, or kill -9 in the middle of a save) and
resumed takes the same steps as an uninterrupted one; a changed recipe is refused by name."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_finetune import _rows, _write, run  # noqa: F401  (run: the tiny fmforge model fixture)

from fmforge.config import FinetuneConfig
from fmforge.errors import UserError
from fmforge.finetune.run import finetune
from fmforge.train import checkpoint
from fmforge.train.signals import TrainingInterrupted

pytest.importorskip("peft")
ROOT = Path(__file__).resolve().parents[1]


def _cfg(method="lora", **kw) -> FinetuneConfig:
    # grad_accum 2 and LoRA dropout: the data position and the RNG state must both come back
    base = dict(method=method, max_steps=8, micro_batch=4, grad_accum=2, lr=5e-3, warmup_steps=2, device="cpu",
                max_length=96, sample_prompts=0, lora={"dropout": 0.1}, prompt_tuning={"virtual_tokens": 4})
    return FinetuneConfig(**{**base, **kw})


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(out, method):
    return load_file(out / ("model/model.safetensors" if method == "full" else "adapter/adapter_model.safetensors"))


def _same_run(a, b, method):
    """b's losses, learning rates and gradient norms at every step and its final weights are a's."""
    ma, mb = _metrics(a), _metrics(b)
    assert [m["step"] for m in mb] == [m["step"] for m in ma] == list(range(1, 9))
    for key in ("loss", "lr", "grad_norm", "tokens"):
        assert [m[key] for m in mb] == pytest.approx([m[key] for m in ma], rel=1e-6), key
    wa, wb = _weights(a, method), _weights(b, method)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-6, atol=1e-9)
    ra, rb = (json.loads((d / "finetune_report.json").read_text()) for d in (a, b))
    assert rb["tuned_eval_loss"] == pytest.approx(ra["tuned_eval_loss"], rel=1e-6)
    assert (rb["base_eval_loss"], rb["base_token_accuracy"], rb["base_task"]) == \
        (ra["base_eval_loss"], ra["base_token_accuracy"], ra["base_task"])
    assert rb["steps"] == ra["steps"] == 8 and rb["tokens"] == ra["tokens"]


def _stop_after(monkeypatch, k):
    """SIGTERM during step k (the loop calls clip_grad_norm_ once a step, after the backward)."""
    real, calls = torch.nn.utils.clip_grad_norm_, {"n": 0}

    def clip(*a, **kw):
        calls["n"] += 1
        if calls["n"] == k:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)


@pytest.mark.parametrize("method", ["full", "lora", "prompt-tuning"])
def test_sigterm_then_resume_equals_an_uninterrupted_run(run, tmp_path, monkeypatch, method):
    data = _write(tmp_path / "pairs.jsonl", _rows(80))
    cfg = _cfg(method)
    finetune(run, data, tmp_path / "whole", cfg, verbose=False)
    assert [p.name for p in checkpoint.complete(tmp_path / "whole" / "checkpoints")] == ["step-00000008"]  # keep 1

    part = tmp_path / "part"
    _stop_after(monkeypatch, 3)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as e:
        finetune(run, data, part, cfg, verbose=False)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == before
    assert e.value.exit_code == 128 + signal.SIGTERM and "--resume" in str(e.value)
    assert e.value.checkpoint == part / "checkpoints" / "step-00000003"
    assert len(_metrics(part)) == 3 and not (part / "finetune_report.json").exists()
    saved = sorted(p.name for p in e.value.checkpoint.iterdir())
    if method == "full":
        assert "model.safetensors" in saved
    else:  # the adapter alone, in PEFT's format: a few KB, not the base model
        assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved
        keys = load_file(e.value.checkpoint / "adapter_model.safetensors").keys()
        assert all(("lora_" in k) if method == "lora" else k == "prompt_embeddings" for k in keys)
    if method == "lora":  # strays: a save killed before its marker, a folder that lacks it
        (part / "checkpoints" / ".tmp-step-00000005").mkdir()
        (part / "checkpoints" / "step-00000006").mkdir()
        (part / "checkpoints" / "step-00000006" / "adapter_model.safetensors").write_bytes(b"half")
    import fmforge.finetune.run as ft_run

    real_eval, evals = ft_run.evaluate_loss, []
    monkeypatch.setattr(ft_run, "evaluate_loss", lambda *a, **kw: evals.append(1) or real_eval(*a, **kw))
    rep = finetune(run, data, part, cfg, verbose=False, resume=True)
    monkeypatch.undo()
    assert rep["steps"] == 8
    assert len(evals) == 1  # the tuned model only: the base's results came with the checkpoint
    _same_run(tmp_path / "whole", part, method)
    assert [p.name for p in checkpoint.complete(part / "checkpoints")] == ["step-00000008"]
    assert not list((part / "checkpoints").glob(".tmp-*"))


def test_resume_refuses_another_recipe_or_data_and_follows_a_new_budget(run, tmp_path):
    data = _write(tmp_path / "pairs.jsonl", _rows(80))
    out = tmp_path / "out"
    finetune(run, data, out, _cfg(max_steps=4), verbose=False)
    metrics = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match="already holds a fine-tuning run.*pass --resume"):
        finetune(run, data, out, _cfg(max_steps=4), verbose=False)
    with pytest.raises(UserError) as e:
        finetune(run, data, out, _cfg(max_steps=4, lora={"r": 4, "dropout": 0.1}, lr=1e-3), verbose=False,
                 resume=True)
    assert "step-00000004: the run differs in finetune.lora.r (was 8, now 4); finetune.lr (was 0.005, now 0.001)" \
        in str(e.value) and "another --out without --resume" in str(e.value)
    other = _write(tmp_path / "other.jsonl", _rows(80, seed=1))
    with pytest.raises(UserError, match="the training rows"):
        finetune(run, other, out, _cfg(max_steps=4), verbose=False, resume=True)
    with pytest.raises(UserError, match="at step 4, past this run's 3 planned steps"):
        finetune(run, data, out, _cfg(max_steps=3), verbose=False, resume=True)
    assert (out / "metrics.jsonl").read_bytes() == metrics  # nothing refused touched the run
    # a raised budget continues the run; how it is checkpointed or reported may change too
    rep = finetune(run, data, out, _cfg(max_steps=6, checkpoint_every=1, keep_checkpoints=2, sample_prompts=1,
                                        max_new_tokens=2), verbose=False, resume=True)
    assert rep["steps"] == 6 and [m["step"] for m in _metrics(out)] == list(range(1, 7))
    assert [p.name for p in checkpoint.complete(out / "checkpoints")] == ["step-00000005", "step-00000006"]


def _cli(run, data, out, *extra, env=None):
    sets = ["finetune.max_steps=8", "finetune.micro_batch=4", "finetune.grad_accum=2", "finetune.lr=5e-3",
            "finetune.warmup_steps=2", "finetune.device=cpu", "finetune.max_length=96", "finetune.sample_prompts=0",
            "finetune.lora.dropout=0.1", "finetune.checkpoint_every=2", "finetune.keep_checkpoints=3"]
    return subprocess.run([sys.executable, "-m", "fmforge", "finetune", "--model", str(run), "--data", str(data),
                           "--method", "lora", "--out", str(out), *[a for s in sets for a in ("--set", s)], *extra],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})})


def test_cli_killed_during_a_save_resumes_from_the_last_complete_checkpoint(run, tmp_path):
    data = _write(tmp_path / "pairs.jsonl", _rows(80))
    r = _cli(run, data, tmp_path / "whole")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "killed"
    r = _cli(run, data, out, env={"FMFORGE_FAULT": "kill-in-save:4"})
    assert r.returncode == -9
    ck = out / "checkpoints"
    assert [p.name for p in checkpoint.complete(ck)] == ["step-00000002"] and list(ck.glob(".tmp-step-00000004"))
    r = _cli(run, data, out)  # the same command again: refused, nothing touched
    assert r.returncode == 2 and "pass --resume" in r.stderr
    r = _cli(run, data, out, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming from {ck / 'step-00000002'} (step 2)" in r.stderr
    _same_run(tmp_path / "whole", out, "lora")
    assert [p.name for p in checkpoint.complete(ck)] == ["step-00000004", "step-00000006", "step-00000008"]
    assert not list(ck.glob(".tmp-*"))
    assert "checkpoints" in json.loads((out / ".fmforge.json").read_text())["files"]


def test_resume_reuses_the_base_results_only_for_the_same_eval_settings(run, tmp_path, monkeypatch):
    """The base model's held-out results travel with the checkpoint; an eval setting a resume may
    change (neutral to the run's identity) makes the resumed run score the base again."""
    import fmforge.finetune.run as ft_run

    data = _write(tmp_path / "pairs.jsonl", _rows(80))
    out = tmp_path / "part"
    _stop_after(monkeypatch, 3)
    with pytest.raises(TrainingInterrupted):
        finetune(run, data, out, _cfg(), verbose=False)
    monkeypatch.undo()
    real_eval, evals = ft_run.evaluate_loss, []
    monkeypatch.setattr(ft_run, "evaluate_loss", lambda *a, **kw: evals.append(1) or real_eval(*a, **kw))
    rep = finetune(run, data, out, _cfg(sample_prompts=1), verbose=False, resume=True)
    assert rep["steps"] == 8 and len(evals) == 2  # the base again, then the tuned model
    assert len(rep["samples"]) == 1 and rep["samples"][0]["base"]
