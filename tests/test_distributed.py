"""Several processes under torchrun (CPU, gloo): FSDP2 and DDP give the losses of one
process at the same global batch (also with Muon), sharded checkpoints resume on another
world size as the same run, and a failed rank ends the job with its error shown.

Each rank accumulates: the global batch is 8 sequences of 64 tokens, so one process runs
4 micro-batches of 2 and each of two ranks 2 of 2 (gradients reduced once per step)."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from fmforge.config import load_recipe
from fmforge.pipeline import Pipeline
from tests.conftest import write_recipe

STEPS = 20
SETS = ["--set", f"train.max_steps={STEPS}", "--set", "train.micro_batch=2", "--set", "train.global_batch_tokens=512",
        "--set", "train.checkpoint_every=10", "--set", "train.keep_checkpoints=4", "--set", "train.warmup_steps=5"]
REL = 1e-5


@pytest.fixture(scope="module")
def recipe(corpus_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    path = write_recipe(root / "recipe.yaml", corpus_dir, root / "runs")
    p = Pipeline(load_recipe(path), verbose=False)
    for stage in ("collect", "prepare", "tokenizer"):
        getattr(p, stage)()
    return path


def losses(run):
    return [json.loads(l)["loss"] for l in open(run / "metrics.jsonl") if '"loss"' in l]


def train(recipe, out, nproc=1, *extra, env=None, timeout=300):
    cmd = [sys.executable, "-m", "fmforge", "train", "--recipe", str(recipe), *SETS, "--out", str(out), *extra]
    if nproc > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def ok(r):
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def keep_only(src, dst, step):
    """A copy of a finished run as if it had stopped after its checkpoint at `step`."""
    shutil.copytree(src, dst)
    for ck in (dst / "checkpoints").glob("step-*"):
        if ck.name != f"step-{step:08d}":
            shutil.rmtree(ck)
    (dst / "model.safetensors").unlink()


@pytest.fixture(scope="module")
def one(recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    ok(train(recipe, out))
    return out


@pytest.mark.timeout(900)
def test_fsdp_and_ddp_match_one_process_and_resume_across_world_sizes(recipe, one, tmp_path):
    ref = losses(one)
    assert len(ref) == STEPS
    fsdp = ok(train(recipe, tmp_path / "fsdp", 2, "--set", "train.parallel.strategy=fsdp"))
    assert "parallel: fsdp on 2 ranks (train.parallel.strategy=fsdp)" in fsdp.stderr
    assert fsdp.stderr.count("batch: 512 tokens/step (2×64×2 devices×2 accum)") == 1  # rank 0 alone says it
    auto = ok(train(recipe, tmp_path / "ddp", 2))  # auto: a small model gets DDP, and the log says why
    assert "parallel: ddp on 2 ranks (" in auto.stderr and "fsdp_min_params" in auto.stderr
    for run in ("fsdp", "ddp"):
        assert losses(tmp_path / run) == pytest.approx(ref, rel=REL), run
    recs = [json.loads(l) for l in open(tmp_path / "fsdp" / "metrics.jsonl")]
    assert set(recs[0]) == set(json.loads(open(one / "metrics.jsonl").readline()))  # the same file as one process
    assert recs[0]["world"] == 2 and recs[0]["tokens_per_s_per_device"] == pytest.approx(recs[0]["tokens_per_s"] / 2)

    # the sharded checkpoint consolidates (one process, no group) into the final weights; export takes it
    from safetensors.torch import load_file

    from fmforge.export.writer import export_hf
    from fmforge.train import checkpoint

    ck = tmp_path / "fsdp" / "checkpoints" / f"step-{STEPS:08d}"
    final = load_file(str(tmp_path / "fsdp" / "model.safetensors"))
    got = checkpoint.consolidated_model(ck).state_dict()
    assert got.keys() == final.keys() and all(torch.equal(got[k], final[k]) for k in final)
    tok = Pipeline(load_recipe(recipe), verbose=False).stage_dir("tokenizer") / "tokenizer.json"
    (tmp_path / "hf").mkdir()
    files = export_hf(ck, tmp_path / "hf", tok)
    assert "config.json" in files and (tmp_path / "hf" / "config.json").is_file()

    # saved by 2 FSDP ranks at step 10: resume at 1 process and at 2, the same run
    two_ref = losses(tmp_path / "fsdp")
    keep_only(tmp_path / "fsdp", tmp_path / "at1", 10)
    ok(train(recipe, tmp_path / "at1", 1, "--resume"))
    assert losses(tmp_path / "at1") == pytest.approx(two_ref, rel=REL)
    keep_only(tmp_path / "fsdp", tmp_path / "at2", 10)
    ok(train(recipe, tmp_path / "at2", 2, "--resume", "--set", "train.parallel.strategy=fsdp"))
    assert losses(tmp_path / "at2") == pytest.approx(two_ref, rel=REL)
    # saved by one process: resume with 2 FSDP ranks
    keep_only(one, tmp_path / "one_at2", 10)
    r = ok(train(recipe, tmp_path / "one_at2", 2, "--resume", "--set", "train.parallel.strategy=fsdp"))
    assert "resumed from" in r.stderr
    assert losses(tmp_path / "one_at2") == pytest.approx(ref, rel=REL)


@pytest.mark.timeout(900)
def test_muon_on_two_fsdp_and_two_ddp_ranks_matches_one_process(recipe, tmp_path):
    muon = ["--set", "train.optimizer=muon", "--set", "train.checkpoint_every=0"]
    ok(train(recipe, tmp_path / "one", 1, *muon))
    ref = losses(tmp_path / "one")
    assert len(ref) == STEPS and ref[-1] < ref[0]
    for strategy in ("fsdp", "ddp"):
        r = ok(train(recipe, tmp_path / strategy, 2, *muon, "--set", f"train.parallel.strategy={strategy}"))
        assert f"parallel: {strategy} on 2 ranks" in r.stderr
        assert losses(tmp_path / strategy) == pytest.approx(ref, rel=REL), strategy


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_saved_by_four_ranks_resumes_on_two(recipe, one, tmp_path):
    """4 FSDP ranks (each 1 micro-batch a step) save at step 10; 2 ranks (2 micro-batches each)
    continue: the losses of the uninterrupted 4-rank run, which are one process's."""
    fsdp = ["--set", "train.parallel.strategy=fsdp"]
    r = ok(train(recipe, tmp_path / "four", 4, *fsdp, timeout=600))
    assert "(2×64×4 devices×1 accum)" in r.stderr
    ref = losses(tmp_path / "four")
    assert ref == pytest.approx(losses(one), rel=REL)
    keep_only(tmp_path / "four", tmp_path / "at2", 10)
    r = ok(train(recipe, tmp_path / "at2", 2, "--resume", *fsdp, timeout=600))
    assert "resumed from" in r.stderr and "(2×64×2 devices×2 accum)" in r.stderr
    assert losses(tmp_path / "at2") == pytest.approx(ref, rel=REL)


@pytest.mark.timeout(300)
def test_ranks_with_different_clocks_plan_one_step_count(recipe, tmp_path):
    """A time budget on 2 ranks whose steps take 0.1 and 0.13 s: planned alone, rank 0 would take
    20 steps and rank 1 15, and rank 0 would wait for rank 1 in a collective that never comes.
    On the ranks' mean clock (0.115 s) both plan floor(2 / 0.115) = 17 steps and end together."""
    r = ok(train(recipe, tmp_path / "run", 2, "--set", "train.max_steps=null", "--set", "train.time_budget_s=2",
                 "--set", "train.checkpoint_every=0", "--set", "train.parallel.timeout_s=60",
                 env={"FMFORGE_STEP_SECONDS": "0.1,0.13"}, timeout=240))
    steps = [json.loads(l)["step"] for l in open(tmp_path / "run" / "metrics.jsonl") if '"loss"' in l]
    assert steps[-1] == 17 and "done: 17 steps" in r.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["kill-rank", "crash-rank"])
def test_a_failed_rank_ends_the_job_with_its_error(recipe, tmp_path, fault):
    t0 = time.monotonic()
    r = train(recipe, tmp_path / "run", 2, "--set", "train.parallel.timeout_s=60",
              env={"FMFORGE_FAULT": f"{fault}:1:3"}, timeout=240)
    took = time.monotonic() - t0
    assert r.returncode != 0 and took < 180
    assert "rank: 1" in r.stderr  # torchrun's failure summary names the rank
    if fault == "kill-rank":
        assert "SIGKILL" in r.stderr
    else:
        assert "injected failure on rank 1 at step 3" in r.stderr


@pytest.mark.timeout(300)
def test_sigterm_to_torchrun_saves_a_sharded_checkpoint_that_resumes(recipe, tmp_path):
    import signal

    from fmforge.train import checkpoint

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "fmforge",
           "train", "--recipe", str(recipe), *SETS, "--set", "train.max_steps=100000", "--set",
           "train.checkpoint_every=0", "--set", "train.checkpoint_every_s=0", "--out", str(out)]
    with open(tmp_path / "log", "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and p.poll() is None:
            if (out / "metrics.jsonl").exists() and len(losses(out)) >= 2:
                break
            time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
    text = (tmp_path / "log").read_text()
    assert "training stopped by SIGTERM" in text, text[-3000:]
    last = checkpoint.latest(out / "checkpoints")
    assert last is not None and (last / checkpoint.MARKER).is_file()
    step = checkpoint.load(last)["step"]
    assert step >= 2
    ok(train(recipe, out, 2, "--resume", "--set", f"train.max_steps={step + 2}"))
    assert len(losses(out)) == step + 2
