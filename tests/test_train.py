"""Trainer: exact resume (also after a kill -9 mid-save), NaN guard, deterministic loader."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fmforge.model.transformer import Transformer
from fmforge.tokenizer.shards import open_split, write_shard
from fmforge.train import checkpoint
from fmforge.train.loader import TokenLoader
from fmforge.train.trainer import TrainingDiverged, train


def losses(path):
    return [json.loads(l)["loss"] for l in open(path) if '"loss"' in l]


def test_resume_is_bit_exact(shards, tmp_path):
    recipe, tok = shards
    r = recipe.model_copy(update={"train": recipe.train.model_copy(update={"max_steps": 8, "checkpoint_every": 3, "keep_checkpoints": 5})})
    train(r, tok, tmp_path / "full", verbose=False)
    full = losses(tmp_path / "full" / "metrics.jsonl")
    assert len(full) == 8
    # the same run, stopped after its step-3 checkpoint: keep only that one, then resume
    import shutil
    shutil.copytree(tmp_path / "full", tmp_path / "part")
    for p in checkpoint.complete(tmp_path / "part" / "checkpoints"):
        if p.name != "step-00000003":
            shutil.rmtree(p)
    (tmp_path / "part" / "model.safetensors").unlink()
    train(r, tok, tmp_path / "part", resume=True, verbose=False)
    assert losses(tmp_path / "part" / "metrics.jsonl") == full


def test_kill_during_checkpoint_save_then_resume(shards, tmp_path, small_recipe):
    """A process killed with SIGKILL between writing and renaming a checkpoint leaves the
    previous one intact; --resume from it reproduces the uninterrupted losses exactly."""
    recipe, tok = shards
    sets = ["--set", "train.max_steps=8", "--set", "train.checkpoint_every=2"]
    base = [sys.executable, "-m", "fmforge", "train", "--recipe", str(small_recipe), *sets]
    subprocess.run([*base, "--out", str(tmp_path / "full")], check=True, capture_output=True)
    env = {**os.environ, "FMFORGE_FAULT": "kill-in-save:6"}
    p = subprocess.run([*base, "--out", str(tmp_path / "killed")], env=env, capture_output=True)
    assert p.returncode == -9
    ck = tmp_path / "killed" / "checkpoints"
    assert [c.name for c in checkpoint.complete(ck)] == ["step-00000002", "step-00000004"]
    assert list(ck.glob(".tmp-*"))  # the half-written save
    subprocess.run([*base, "--out", str(tmp_path / "killed"), "--resume"], check=True, capture_output=True)
    assert losses(tmp_path / "killed" / "metrics.jsonl") == losses(tmp_path / "full" / "metrics.jsonl")
    assert not list(ck.glob(".tmp-*"))


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])  # each skips a bad step on the device (found_inf)
def test_nan_guard_skips_then_stops(shards, tmp_path, monkeypatch, optimizer):
    recipe, tok = shards
    r = recipe.model_copy(update={"train": recipe.train.model_copy(
        update={"max_steps": 20, "checkpoint_every": 2, "max_bad_steps": 3, "optimizer": optimizer})})
    real_forward = Transformer.forward
    calls = {"n": 0}

    def flaky(self, idx, targets=None, reduction="mean"):
        calls["n"] += 1
        out = real_forward(self, idx, targets, reduction)
        # step 3 is bad once (skipped, run goes on); from step 6 on every step is bad
        return out * float("nan") if calls["n"] == 3 or calls["n"] >= 7 else out

    monkeypatch.setattr(Transformer, "forward", flaky)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        train(r, tok, tmp_path / "nan", verbose=False)
    ck = checkpoint.latest(tmp_path / "nan" / "checkpoints")
    state = checkpoint.load(ck)
    assert state["step"] == 4 and state["skipped"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint.consolidate(ck).values())


def test_loader_deterministic_resumable_and_rank_disjoint(tmp_path):
    docs = [np.arange(i * 1000, i * 1000 + 517, dtype=np.uint32) for i in range(7)]
    write_shard(tmp_path / "train-00000.bin", docs, [1] * 7, 65536)
    shards = open_split(tmp_path, "train")
    a = TokenLoader(shards, 16, 4, seed=1)
    b = TokenLoader(shards, 16, 4, seed=1)
    batches = [a.next_batch()[0] for _ in range(5)]
    assert all(torch.equal(x, b.next_batch()[0]) for x in batches)
    c = TokenLoader(shards, 16, 4, seed=1)
    c.load_state_dict(TokenLoader(shards, 16, 4, seed=1).state_dict() | {"position": 12})
    assert torch.equal(c.next_batch()[0], batches[3])
    assert not torch.equal(TokenLoader(shards, 16, 4, seed=2).next_batch()[0], batches[0])
    r0, r1 = TokenLoader(shards, 16, 2, 1, rank=0, world=2), TokenLoader(shards, 16, 2, 1, rank=1, world=2)
    x0, y0 = r0.next_batch()
    x1, _ = r1.next_batch()
    assert torch.equal(torch.cat([x0, x1]), batches[0])
    assert torch.equal(x0[:, 1:], y0[:, :-1])


def test_activation_checkpointing_gives_the_same_losses(shards, tmp_path):
    recipe, tok = shards
    runs = []
    for ac in (False, True):
        r = recipe.model_copy(update={"train": recipe.train.model_copy(
            update={"max_steps": 3, "activation_checkpointing": ac})})
        train(r, tok, tmp_path / f"ac{ac}", verbose=False)
        runs.append(losses(tmp_path / f"ac{ac}" / "metrics.jsonl"))
    assert runs[0] == runs[1]


def test_muon_optimizer_trains_and_resumes_exactly(shards, tmp_path):
    recipe, tok = shards
    r = recipe.model_copy(update={"train": recipe.train.model_copy(
        update={"max_steps": 6, "checkpoint_every": 3, "keep_checkpoints": 5, "optimizer": "muon"})})
    train(r, tok, tmp_path / "full", verbose=False)
    full = losses(tmp_path / "full" / "metrics.jsonl")
    assert full[-1] < full[0]
    import shutil
    shutil.copytree(tmp_path / "full", tmp_path / "part")
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "step-00000006")
    train(r, tok, tmp_path / "part", resume=True, verbose=False)
    assert losses(tmp_path / "part" / "metrics.jsonl") == full


def test_running_ahead_of_the_loss_read_changes_no_number(shards, tmp_path, monkeypatch):
    """The trainer queues step n+1 before reading step n back (device-side skip, one process)
    except where a checkpoint, an eval or the end of the budget follows step n. Doing so must
    change nothing but timing: losses, norms, learning rates, checkpoints and the final weights
    equal those of a run that reads every step before the next, here with a checkpoint every
    3 steps, an eval every 4 and a token budget that ends mid-interval."""
    from fmforge.train.trainer import Trainer

    recipe, tok = shards
    r = recipe.model_copy(update={"train": recipe.train.model_copy(update={
        "max_steps": None, "max_tokens": 11 * 4 * recipe.model.context_length - 1, "checkpoint_every": 3,
        "eval_every": 4, "keep_checkpoints": 10, "optimizer": "muon"})})
    real = Trainer._may_run_ahead
    ahead = []

    def counted(self):
        ahead.append(real(self))
        return ahead[-1]

    monkeypatch.setattr(Trainer, "_may_run_ahead", counted)
    train(r, tok, tmp_path / "ahead", verbose=False)
    assert sum(ahead) >= 4  # it did run ahead, between the boundaries
    monkeypatch.setattr(Trainer, "_may_run_ahead", lambda self: False)
    train(r, tok, tmp_path / "sync", verbose=False)

    def records(run):
        keep = ("step", "loss", "grad_norm", "lr", "tokens", "epoch")
        return [{k: v for k, v in json.loads(line).items() if k in keep} for line in open(tmp_path / run / "metrics.jsonl")]

    a, b = records("ahead"), records("sync")
    assert a == b and [x["step"] for x in a if "step" in x][-1] == 11
    ck = lambda run: [c.name for c in checkpoint.complete(tmp_path / run / "checkpoints")]  # noqa: E731
    assert ck("ahead") == ck("sync") and "step-00000009" in ck("ahead")
    wa, wb = (checkpoint.consolidate(checkpoint.latest(tmp_path / run / "checkpoints")) for run in ("ahead", "sync"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
