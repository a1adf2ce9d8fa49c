"""train.loss_chunk_tokens (fmforge.model.chunked_loss): the loss and both gradients of the
head + cross-entropy, chunk by chunk, equal a float64 reference; nothing of tokens × vocab is
kept for the backward; a training run gives the losses of the unchunked head, and the option
neither changes a run's identity nor blocks a resume."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from fmforge.config import load_recipe
from fmforge.model.chunked_loss import chunked_loss_head
from fmforge.model.transformer import Transformer

N, D, V = 45, 12, 97  # tokens (odd: no chunk size below divides them), width, vocabulary


def _inputs(seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(3, N // 3, D, generator=g)
    w = torch.randn(V, D, generator=g) * scale / D ** 0.5  # logits of a few units: a cap of 2 bites
    t = torch.randint(0, V, (3, N // 3), generator=g)
    t[0, :4] = -100  # ignored rows, in the first chunk and in later ones
    t[2, 5::4] = -100
    return h, w, t


def _reference(h, w, t, reduction, cap):
    """Loss, ∂h, ∂W in float64, the head and loss written out here with autograd."""
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    z = h64 @ w64.T
    if cap is not None:
        z = cap * torch.tanh(z / cap)
    loss = F.cross_entropy(z.reshape(-1, V), t.reshape(-1), ignore_index=-100, reduction=reduction)
    loss.backward()
    return loss.detach(), h64.grad, w64.grad


def _chunked(h, w, t, reduction, cap, chunk):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss = chunked_loss_head(h, w, t, reduction, cap, chunk_tokens=chunk)
    loss.backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("cap", [None, 2.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("chunk", [1, 7, 16, 1000])  # 7, 16: do not divide 45; 1000: more than the tokens
def test_loss_and_gradients_equal_float64_cross_entropy(cap, reduction, chunk):
    h, w, t = _inputs()
    want = _reference(h, w, t, reduction, cap)
    got = _chunked(h, w, t, reduction, cap, chunk)
    assert got[0].dtype == torch.float32 and got[1].shape == h.shape and got[2].shape == w.shape
    for a, b, what in zip(got, want, ("loss", "dh", "dW")):
        assert torch.allclose(a.double(), b, rtol=1e-5, atol=1e-6), (what, (a.double() - b).abs().max())
    if cap is not None:  # the cap changes the numbers: the comparison above saw it
        assert not torch.allclose(got[0].double(), _reference(h, w, t, reduction, None)[0], rtol=1e-3)


def test_backward_scales_by_the_incoming_gradient():
    h, w, t = _inputs(1)
    loss_ref, dh_ref, dw_ref = _reference(h, w, t, "mean", None)
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    (chunked_loss_head(h, w, t, "mean", chunk_tokens=10) * -2.5).backward()
    assert torch.allclose(h.grad.double(), -2.5 * dh_ref, atol=1e-6)
    assert torch.allclose(w.grad.double(), -2.5 * dw_ref, atol=1e-6)


def test_frozen_head_frozen_input_and_no_grad():
    h, w, t = _inputs(2)
    loss_ref, dh_ref, dw_ref = _reference(h, w, t, "sum", 2.0)
    hh = h.clone().requires_grad_()  # a frozen head (LoRA): only ∂h
    chunked_loss_head(hh, w, t, "sum", 2.0, chunk_tokens=8).backward()
    assert torch.allclose(hh.grad.double(), dh_ref, atol=1e-5) and w.grad is None
    ww = w.clone().requires_grad_()  # an input that needs no gradient: only ∂W
    chunked_loss_head(h, ww, t, "sum", 2.0, chunk_tokens=8).backward()
    assert torch.allclose(ww.grad.double(), dw_ref, atol=1e-5) and h.grad is None
    with torch.no_grad():  # eval: the loss alone
        loss = chunked_loss_head(hh, ww, t, "sum", 2.0, chunk_tokens=8)
    assert not loss.requires_grad and torch.allclose(loss.double(), loss_ref, rtol=1e-6)


def test_no_scored_token_behaves_as_cross_entropy():
    """Mean over no scored token: nan with zero gradients, as F.cross_entropy; sum: 0."""
    h, w, _ = _inputs(3)
    t = torch.full((3, N // 3), -100)
    for reduction in ("mean", "sum"):
        want = _reference(h, w, t, reduction, None)
        got = _chunked(h, w, t, reduction, None, 8)
        assert torch.equal(got[0].isnan(), want[0].isnan()) and (reduction == "sum") == (got[0].item() == 0)
        assert torch.equal(got[1], torch.zeros_like(h)) and torch.equal(want[1], torch.zeros_like(want[1]))
        assert torch.equal(got[2], torch.zeros_like(w))


def test_bf16_autocast_keeps_each_tensor_in_its_dtype():
    """Under bf16 autocast the logits are bf16 (as F.linear's), the loss fp32 and each gradient in
    its input's dtype: fp32 weights (single/DDP) and bf16 ones (FSDP2's param_dtype) alike."""
    h, w, t = _inputs(4)
    ref = _reference(h, w, t, "mean", 2.0)
    for dtype in (torch.float32, torch.bfloat16):
        hh, ww = h.to(dtype, copy=True).requires_grad_(), w.to(dtype, copy=True).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = chunked_loss_head(hh, ww, t, "mean", 2.0, chunk_tokens=8)
        loss.backward()
        assert loss.dtype == torch.float32 and hh.grad.dtype == dtype and ww.grad.dtype == dtype
        assert abs(loss.item() - ref[0].item()) < 2e-2
        for got, want in ((hh.grad, ref[1]), (ww.grad, ref[2])):
            assert (got.double() - want).abs().max() < 0.02 * want.abs().max()


def _largest_saved(fn) -> int:
    """The most elements of any one tensor autograd keeps for fn's backward."""
    sizes = []

    def pack(x):
        sizes.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = fn()
    loss.backward()
    return max(sizes)


def test_nothing_of_tokens_times_vocab_is_kept_for_the_backward():
    tokens, d, vocab, chunk = 64, 16, 256, 16  # d <= chunk: ∂W (vocab × d) fits the bound too
    g = torch.Generator().manual_seed(5)
    h = torch.randn(tokens, d, generator=g, requires_grad=True)
    w = torch.randn(vocab, d, generator=g, requires_grad=True)
    t = torch.randint(0, vocab, (tokens,), generator=g)
    plain = _largest_saved(lambda: Transformer.loss_head(h, w, t, "mean", 2.0))
    chunked = _largest_saved(lambda: chunked_loss_head(h, w, t, "mean", 2.0, chunk_tokens=chunk))
    assert plain >= tokens * vocab  # the bound below fails on the unchunked head
    assert chunked <= chunk * vocab


def test_refuses_other_reductions_and_chunk_sizes():
    h, w, t = _inputs()
    with pytest.raises(ValueError, match="reduction"):
        chunked_loss_head(h, w, t, "none", chunk_tokens=8)
    with pytest.raises(ValueError, match="train.loss_chunk_tokens"):
        chunked_loss_head(h, w, t, "mean", chunk_tokens=0)


@pytest.mark.slow
def test_compiles_in_one_graph_and_equals_eager():
    """torch.compile (train.compile=on compiles the loss head apart) traces the Function whole."""
    import functools

    h, w, t = _inputs(6)
    fn = torch.compile(functools.partial(chunked_loss_head, chunk_tokens=10), fullgraph=True)
    want = _chunked(h, w, t, "mean", 2.0, 10)
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    fn(hh, ww, t, "mean", 2.0).backward()
    assert torch.allclose(hh.grad, want[1], atol=1e-6) and torch.allclose(ww.grad, want[2], atol=1e-6)


# ---------------------------------------------------------------- in training


def _losses(path):
    return [json.loads(line)["loss"] for line in open(path / "metrics.jsonl") if '"loss"' in line]


def _with(recipe, **train):
    return recipe.model_copy(update={"train": recipe.train.model_copy(update=train)})


def test_training_losses_match_and_a_run_resumes_with_the_option_changed(shards, tmp_path, monkeypatch):
    """4 steps of 4×64 tokens in chunks of 100 (the last of 56) give the unchunked run's losses,
    and the unchunked run's step-2 checkpoint resumes with the option on (neutral)."""
    from fmforge.model.chunked_loss import ChunkedLinearCrossEntropy
    from fmforge.train import checkpoint
    from fmforge.train.trainer import train

    calls = []
    apply = ChunkedLinearCrossEntropy.apply
    monkeypatch.setattr(ChunkedLinearCrossEntropy, "apply", lambda *a: calls.append(a[3]) or apply(*a))
    recipe, tok = shards
    off = _with(recipe, max_steps=4, checkpoint_every=2, keep_checkpoints=5)
    on = _with(off, loss_chunk_tokens=100)
    train(off, tok, tmp_path / "off", verbose=False)
    assert calls == []
    train(on, tok, tmp_path / "on", verbose=False)
    assert calls == [100] * 4  # the chunked head took every training step's loss
    ref = _losses(tmp_path / "off")
    assert len(ref) == 4 and _losses(tmp_path / "on") == pytest.approx(ref, rel=1e-5)
    shutil.copytree(tmp_path / "off", tmp_path / "part")
    for ck in checkpoint.complete(tmp_path / "part" / "checkpoints"):
        if ck.name != "step-00000002":
            shutil.rmtree(ck)
    (tmp_path / "part" / "model.safetensors").unlink()
    train(on, tok, tmp_path / "part", resume=True, verbose=False)
    assert _losses(tmp_path / "part") == pytest.approx(ref, rel=1e-5)


def test_runs_from_before_the_field_keep_their_identity():
    """The field is neutral: it is in no dump that decides whether a run is the same (the run
    identity a checkpoint holds, the train and finetune stages' hashes), set or not, so runs
    made before it existed stay up to date and resume."""
    from fmforge.pipeline import stage_settings
    from fmforge.train.identity import run_identity

    old = load_recipe("h200-60s")
    assert old.train.loss_chunk_tokens is None and old.finetune.loss_chunk_tokens is None
    new = load_recipe("h200-60s", ["train.loss_chunk_tokens=4096", "finetune.loss_chunk_tokens=1024"])
    for stage in ("train", "eval", "finetune"):
        assert stage_settings(new, stage) == stage_settings(old, stage), stage
    assert run_identity(new, "t") == run_identity(old, "t")
    assert "loss_chunk_tokens" not in json.dumps(stage_settings(old, "train")) + json.dumps(run_identity(old, "t"))
    assert "loss_chunk_tokens" not in json.dumps(stage_settings(old, "finetune"))
    from fmforge.finetune.checkpoint import run_identity as finetune_identity

    base = torch.nn.Linear(2, 2)
    assert finetune_identity(new.finetune, base, []) == finetune_identity(old.finetune, base, [])


def test_a_bad_value_names_the_field():
    from fmforge.errors import UserError

    with pytest.raises(UserError, match=r"train\.loss_chunk_tokens"):
        load_recipe("h200-60s", ["train.loss_chunk_tokens=-1"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fsdp_and_ddp_on_two_ranks_match_one_unchunked_process(corpus_dir, tmp_path):
    """Under FSDP2 the head's weight is sharded (gathered for the forward), under DDP replicated:
    on 2 gloo ranks the chunked head gives the losses of one process with the plain head."""
    import os
    import subprocess
    import sys

    from fmforge.pipeline import Pipeline
    from tests.conftest import write_recipe

    path = write_recipe(tmp_path / "recipe.yaml", corpus_dir, tmp_path / "runs")
    p = Pipeline(load_recipe(path), verbose=False)
    for stage in ("collect", "prepare", "tokenizer"):
        getattr(p, stage)()
    sets = ["--set", "train.max_steps=5", "--set", "train.micro_batch=2", "--set", "train.global_batch_tokens=512"]

    def run(out, *extra, nproc=1):
        cmd = [sys.executable, "-m", "fmforge", "train", "--recipe", str(path), *sets, "--out", str(out), *extra]
        if nproc > 1:
            cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           timeout=400)
        assert r.returncode == 0, r.stderr[-4000:]
        return r

    run(tmp_path / "one")
    ref = _losses(tmp_path / "one")
    chunk = ["--set", "train.loss_chunk_tokens=48"]  # 2×64 tokens a micro-batch: chunks of 48, 48, 32
    for strategy in ("fsdp", "ddp"):
        r = run(tmp_path / strategy, *chunk, "--set", f"train.parallel.strategy={strategy}", nproc=2)
        assert f"parallel: {strategy} on 2 ranks" in r.stderr and "loss head in chunks of 48 tokens" in r.stderr
        assert _losses(tmp_path / strategy) == pytest.approx(ref, rel=1e-5), strategy
