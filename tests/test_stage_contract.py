"""The stage contract (docs/stages.md): what re-runs a stage, what resumes it, what a fresh
start does with the old outputs, the run folder's lock, and torchrun's ranks agreeing."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import write_recipe
from fmforge.config import load_recipe
from fmforge.pipeline import Pipeline


def pipeline(recipe, *sets, **kw):
    return Pipeline(load_recipe(recipe, list(sets)), verbose=kw.pop("verbose", False), **kw)


def ran(p):
    return {r.name for r in p.runs if not r.skipped}


def steps_and_losses(metrics):
    recs = [json.loads(line) for line in open(metrics) if '"loss"' in line]
    return [r["step"] for r in recs], [r["loss"] for r in recs]


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "fmforge", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_settings_that_do_not_change_a_result_rerun_nothing(small_recipe):
    pipeline(small_recipe).run_all()
    # workers and logging: how a stage runs, not what it makes (before: data.workers redid prepare
    # and everything after it)
    p = pipeline(small_recipe, "data.workers=1", "data.strict=true", "tokenizer.workers=1", "train.log_every=2",
                 "train.keep_checkpoints=3")
    p.run_all()
    assert ran(p) == set()
    # the sample's temperature changes the sample, not the evaluation (before: both re-ran)
    p = pipeline(small_recipe, "eval.temperature=0.9")
    p.run_all()
    assert ran(p) == {"sample"}
    p = pipeline(small_recipe, "eval.temperature=0.9", "eval.max_docs=2")
    p.run_all()
    assert ran(p) == {"eval"}


def test_raised_budget_with_resume_continues_the_run(small_recipe, tmp_path):
    """The README's `fmforge train ... --set train.<budget>=... --resume`: before, the changed
    budget changed the stage's hash and the pipeline deleted its checkpoints: step 1 again."""
    p = pipeline(small_recipe)
    p.run_all()
    metrics = p.stage_dir("train") / "metrics.jsonl"
    steps6, losses6 = steps_and_losses(metrics)
    assert steps6 == list(range(1, 7))
    r = cli("train", "--recipe", str(small_recipe), "--set", "train.max_steps=9", "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "continuing the run" in r.stderr and "max_steps 6 → 9" in r.stderr
    steps, losses = steps_and_losses(metrics)
    assert steps == list(range(1, 10)) and losses[:6] == losses6
    assert not list(tmp_path.glob("runs/t/train.old-*"))


def test_a_refused_continue_leaves_the_finished_run_finished(small_recipe, tmp_path):
    """--resume with a budget below the newest checkpoint is refused; before, the run's records
    were already rewritten, so the next plain run moved the finished run aside and trained anew."""
    p = pipeline(small_recipe)
    p.run_all()
    model = (p.stage_dir("train") / "model.safetensors").read_bytes()
    r = cli("train", "--recipe", str(small_recipe), "--set", "train.max_steps=3", "--resume")
    assert r.returncode == 2 and "past this recipe's budget" in r.stderr, r.stderr[-2000:]
    p2 = pipeline(small_recipe)
    p2.run_all()
    assert not ran(p2) and not list(tmp_path.glob("runs/t/train.old-*"))
    assert (p.stage_dir("train") / "model.safetensors").read_bytes() == model


def test_changed_training_starts_afresh_and_moves_the_old_run_aside(small_recipe, tmp_path):
    p = pipeline(small_recipe)
    p.run_all()
    _, losses6 = steps_and_losses(p.stage_dir("train") / "metrics.jsonl")
    r = cli("train", "--recipe", str(small_recipe), "--set", "train.max_steps=7")
    assert r.returncode == 0, r.stderr[-2000:]
    old = list((tmp_path / "runs" / "t").glob("train.old-*"))
    assert len(old) == 1 and str(old[0]) in r.stderr and "max_steps 6 → 7" in r.stderr
    assert steps_and_losses(old[0] / "metrics.jsonl")[1] == losses6  # the old run, untouched
    assert list((old[0] / "checkpoints").glob("step-*"))
    steps, _ = steps_and_losses(p.stage_dir("train") / "metrics.jsonl")
    assert steps == list(range(1, 8))  # a fresh run, not mixed with the old one


def test_killed_training_resumes_under_fmforge_run(small_recipe, tmp_path):
    sets = ["--set", "train.checkpoint_every=2"]
    clean = write_recipe(tmp_path / "clean.yaml", load_recipe(small_recipe).data.sources[0], tmp_path / "clean")
    r = cli("run", "--recipe", str(clean), *sets)
    assert r.returncode == 0, r.stderr[-2000:]
    _, want = steps_and_losses(tmp_path / "clean" / "t" / "train" / "metrics.jsonl")
    r = cli("run", "--recipe", str(small_recipe), *sets, env={"FMFORGE_FAULT": "kill-in-save:4"})
    assert r.returncode == -signal.SIGKILL
    r = cli("run", "--recipe", str(small_recipe), *sets)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[train] resuming the interrupted run" in r.stderr and "resumed from" in r.stderr
    assert "[prepare] up to date" in r.stderr and "[tokenizer] up to date" in r.stderr
    steps, losses = steps_and_losses(tmp_path / "runs" / "t" / "train" / "metrics.jsonl")
    assert steps == list(range(1, 7)) and losses == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("stage", ["prepare", "tokenizer"])
def test_an_interrupted_stage_keeps_its_work_and_a_changed_one_removes_it(small_recipe, stage, monkeypatch):
    """Before, any stage without stage.json was deleted, so prepare's .work and encode's progress
    (their resume after a kill) never survived `fmforge run`."""
    p = pipeline(small_recipe)
    p.run_stages(["collect", "prepare", "tokenizer"])
    folder = p.stage_dir(stage)
    (folder / "stage.json").unlink()  # as a kill leaves it: started.json, partial work
    (folder / "partial-work").write_text("x")
    p = pipeline(small_recipe)
    p.run_stages(["collect", "prepare", "tokenizer"])
    assert ran(p) == {stage}  # same settings: the same result, so what reads it stays up to date
    assert (folder / "partial-work").exists()
    # another setting for the stage: a fresh start, the old outputs removed
    change = {"prepare": "data.min_chars=65", "tokenizer": "tokenizer.vocab_size=500"}[stage]
    p = pipeline(small_recipe, change)
    p.run_stages(["collect", "prepare", "tokenizer"])
    assert not (folder / "partial-work").exists() and (folder / "stage.json").exists()


def test_a_stage_folder_with_foreign_files_is_refused(small_recipe, tmp_path):
    folder = tmp_path / "runs" / "t" / "collect"
    folder.mkdir(parents=True)
    (folder / "my-notes.txt").write_text("mine")
    r = cli("run", "--recipe", str(small_recipe))
    assert r.returncode == 2 and "did not write" in r.stderr and "Traceback" not in r.stderr
    assert (folder / "my-notes.txt").read_text() == "mine"


def test_a_second_process_is_refused_while_the_first_holds_the_run(small_recipe, tmp_path):
    run_dir = tmp_path / "runs" / "t"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from fmforge.outputs import locked\n"
                               f"with locked({str(run_dir)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = cli("run", "--recipe", str(small_recipe))
        assert r.returncode == 2 and f"pid {holder.pid}" in r.stderr and "Traceback" not in r.stderr
        assert not (run_dir / "collect").exists()  # it wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the holder died without unlocking: its lock is taken over
    from fmforge.outputs import locked

    with locked(run_dir):
        pass


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", ".."])
def test_a_recipe_name_cannot_escape_the_runs_folder(small_recipe, name):
    r = cli("config", "show", "--recipe", str(small_recipe), "--set", f"name={name}")
    assert r.returncode == 2 and "name" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.timeout(300)
def test_torchrun_ranks_agree_to_skip_an_up_to_date_stage(small_recipe):
    """Before, rank 0 skipped the up-to-date train stage and rank 1 trained alone, blocked for ever."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "fmforge", "train", "--recipe", str(small_recipe), "--set", "train.max_steps=2"]
    r = subprocess.run(torchrun, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    t0 = time.time()
    r = subprocess.run(torchrun, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[train] up to date, skipped" in r.stderr and time.time() - t0 < 100


def test_a_run_folder_of_the_users_is_refused_before_anything_is_written(small_recipe, tmp_path):
    """out_dir/name pointing at a folder of the user's (no stage record of fmforge in it):
    refused with exit 2, and its report.md is not replaced by the run's."""
    mine = tmp_path / "runs" / "t"
    mine.mkdir(parents=True)
    (mine / "report.md").write_text("my report")
    r = cli("run", "--recipe", str(small_recipe))
    assert r.returncode == 2 and "did not write" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["report.md"]
    assert (mine / "report.md").read_text() == "my report"


def test_a_first_run_that_fails_on_its_input_leaves_no_empty_run_folder(tmp_path, corpus_dir):
    """The folders the run created (runs/ and runs/t) go again when nothing was written to them;
    a run folder that was there before stays, and so does one that holds anything else."""
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "no-such-source", tmp_path / "runs")
    r = cli("run", "--recipe", str(recipe))
    assert r.returncode == 2 and "no-such-source" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]
    (tmp_path / "runs" / "t").mkdir(parents=True)  # there before: kept, though empty
    assert cli("run", "--recipe", str(recipe)).returncode == 2
    assert (tmp_path / "runs" / "t").is_dir()
