"""Two processes under torchrun (CPU, gloo, FSDP2): they train, checkpoint and resume
exactly, and give the losses of one process with the same global batch."""
import json
import subprocess
import sys

import pytest

from fmforge.config import load_recipe
from fmforge.pipeline import Pipeline


def losses(path):
    return [json.loads(l)["loss"] for l in open(path) if '"loss"' in l]


@pytest.mark.timeout(600)
def test_fsdp_two_ranks_match_one_and_resume_exactly(small_recipe, tmp_path):
    p = Pipeline(load_recipe(small_recipe), verbose=False)
    for stage in ("collect", "prepare", "tokenizer"):
        getattr(p, stage)()
    sets = ["--set", "train.max_steps=4", "--set", "train.checkpoint_every=2", "--set", "train.keep_checkpoints=4"]
    base = ["-m", "fmforge", "train", "--recipe", str(small_recipe), *sets]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    r = subprocess.run([*torchrun, *base, "--out", str(tmp_path / "two")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    two = losses(tmp_path / "two" / "metrics.jsonl")
    assert len(two) == 4
    # one process, twice the micro-batch: the same global batch of the same windows
    one_sets = [*base, "--set", "train.micro_batch=8", "--out", str(tmp_path / "one")]
    subprocess.run([sys.executable, *one_sets], check=True, capture_output=True)
    one = losses(tmp_path / "one" / "metrics.jsonl")
    assert one == pytest.approx(two, rel=1e-4)
    # resume the two-rank run from its step-2 checkpoint
    import shutil

    shutil.rmtree(tmp_path / "two" / "checkpoints" / "step-00000004")
    r = subprocess.run([*torchrun, *base, "--out", str(tmp_path / "two"), "--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert losses(tmp_path / "two" / "metrics.jsonl") == two
