"""In-process parts of multi-device training: the strategy choice, the batch arithmetic,
and Muon's per-projection orthogonalisation of fused weights."""
import pytest
import torch

from fmforge.config import ModelConfig, TrainConfig
from fmforge.errors import UserError
from fmforge.model.transformer import Transformer
from fmforge.train.muon import build_muon, orthogonalize
from fmforge.train.optim import set_lr
from fmforge.train.parallelize import choose_strategy
from fmforge.train.step import accumulation


def test_strategy_auto_by_size_and_forced():
    cfg = TrainConfig(max_steps=1, parallel={"fsdp_min_params": 1000})
    assert choose_strategy(cfg, 10**6, 1)[0] == "single"
    assert choose_strategy(cfg, 999, 8)[0] == "ddp"
    name, why = choose_strategy(cfg, 1000, 8)
    assert name == "fsdp" and "fsdp_min_params" in why
    forced = TrainConfig(max_steps=1, parallel={"strategy": "ddp"})
    assert choose_strategy(forced, 10**12, 4) == ("ddp", "train.parallel.strategy=ddp")


def test_global_batch_sets_accumulation_and_refuses_remainders():
    assert accumulation(524288, 32, 1024, 1) == 16
    assert accumulation(524288, 32, 1024, 8) == 2
    assert accumulation(None, 4, 64, 2) == 1
    with pytest.raises(UserError, match=r"global_batch_tokens=524,288 .* 32×1024×3 = 98,304 .* 491,520 or 589,824"):
        accumulation(524288, 32, 1024, 3)


def test_muon_orthogonalises_each_projection_of_a_fused_weight():
    """From zero momentum the first update of wqkv (q|k|v rows) is lr·NS(u) per projection,
    u = (1 + momentum)·grad (Nesterov): the Newton-Schulz map applied to each projection's
    rows apart, which differs from applying it to the fused matrix."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=64, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2,
                                    context_length=16))
    opt = build_muon(model, TrainConfig(max_steps=1, muon_lr=0.02, lr=0.01, weight_decay=0.0))
    w = model.layers[0].attn.wqkv.weight
    before = w.detach().clone()
    x = torch.randint(0, 64, (4, 16))
    model(x, x).backward()
    u = w.grad.detach() * 1.95
    for group in opt.param_groups:
        group["lr"] = 0.02 if group["muon"] else 0.0
    opt.step()
    update = (before - w.detach()) / 0.02
    rows = [64, 32, 32]  # q: 4 heads × 16, k and v: 2 KV heads × 16; each wider than tall: scale 1
    apart = torch.cat([orthogonalize(p) for p in u.split(rows, dim=0)])
    assert torch.allclose(update, apart, atol=1e-5)
    assert not torch.allclose(update, orthogonalize(u) * 3 ** 0.5, atol=1e-2)


def test_distributed_doc_memory_table_is_the_cost_module():
    """docs/distributed.md's 'which preset fits on how many GPUs' cells are fmforge.cost.memory's
    fewest FSDP devices without / with activation checkpointing (micro-batch 1 × 2048)."""
    import re
    from pathlib import Path

    from fmforge import hardware
    from fmforge.cost.estimate import model_from_preset
    from fmforge.cost.memory import min_devices

    doc = (Path(__file__).resolve().parents[1] / "docs" / "distributed.md").read_text()
    rows = re.findall(r"^\| ((?:gpt2|llama)-\w+) \|[^|]+\|[^|]+\|(.+)\|$", doc, re.M)
    assert len(rows) == 7
    for name, cells in rows:
        m = model_from_preset(name, 2048, 1)
        want = [f"{min_devices(m.params, m.cfg, 1, 2048, 'fsdp', False, hardware.get(g).memory_gb)} / "
                f"{min_devices(m.params, m.cfg, 1, 2048, 'fsdp', True, hardware.get(g).memory_gb)}"
                for g in ("a100", "h100", "h200")]
        assert [c.strip() for c in cells.split("|")] == want, name


def test_muon_optimizer_steps_match_references_over_several_steps():
    """The AdamW part equals torch.optim.AdamW (per tensor, no foreach), also when one tensor
    misses a gradient on one step (its bias correction then lags); the Muon part equals a
    per-matrix reference written here: momentum, Nesterov, each projection orthogonalised,
    the shape scale, decoupled weight decay."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                    context_length=16, ffn_dim=96, tie_embeddings=False))
    cfg = TrainConfig(max_steps=1, muon_lr=0.02, lr=0.01, weight_decay=0.1, beta1=0.9, beta2=0.95)
    opt = build_muon(model, cfg)
    set_lr(opt, 0.01)  # as the trainer does: Muon's group at lr × lr_scale = 0.02
    muon_group, *adam_groups = opt.param_groups
    adam_params = [p for g in adam_groups for p in g["params"]]
    ref_adam = [p.detach().clone().requires_grad_() for p in adam_params]
    ref_opt = torch.optim.AdamW([{"params": ref_adam[:len(adam_groups[0]["params"])], "weight_decay": 0.0},
                                 {"params": ref_adam[len(adam_groups[0]["params"]):], "weight_decay": 0.0}],
                                lr=0.01, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    mats = [(p, p.detach().clone(), torch.zeros_like(p), s) for p, s in zip(muon_group["params"], muon_group["splits"])]
    for step in range(3):
        x = torch.randint(0, 64, (4, 16))
        opt.zero_grad(set_to_none=True)
        model(x, x).backward()
        if step == 1:
            adam_params[-1].grad = None  # one gain skips a step
        for p, r in zip(adam_params, ref_adam):
            r.grad = None if p.grad is None else p.grad.clone()
        grads = [p.grad.clone() for p, *_ in mats]
        opt.step()
        ref_opt.step()
        for (p, w, buf, splits), g in zip(mats, grads):
            buf.mul_(0.95).add_(g)
            u = g + 0.95 * buf
            parts = u.split(list(splits), dim=0) if splits else [u]
            upd = torch.cat([orthogonalize(t) * max(1.0, t.shape[0] / t.shape[1]) ** 0.5 for t in parts])
            w.mul_(1 - 0.02 * 0.1).add_(upd, alpha=-0.02)
            assert torch.allclose(p.detach(), w, atol=1e-6), step
        for p, r in zip(adam_params, ref_adam):
            assert torch.allclose(p.detach(), r.detach(), rtol=1e-5, atol=1e-7), step


def test_muon_skips_a_step_on_the_device_when_found_inf_is_set():
    """found_inf = 1 (the protocol of torch's fused AdamW): weights, momentum, Adam moments and
    step counts stay bit-identical even with NaN/inf gradients, and the next good step equals an
    optimizer's that never saw the bad one. found_inf = 0 equals no found_inf (to rounding: the
    gated update multiplies by a tensor rate where the plain one adds with alpha)."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, context_length=16, ffn_dim=64)
    tcfg = TrainConfig(max_steps=1, muon_lr=0.02, lr=0.01, weight_decay=0.1)
    models = [Transformer(cfg) for _ in range(3)]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    opts = [build_muon(m, tcfg) for m in models]
    for o in opts:
        set_lr(o, 0.01)
    x = torch.randint(0, 64, (4, 16))

    def grads(step_model, poison=False):
        step_model.zero_grad(set_to_none=True)
        step_model(x, x).backward()
        if poison:
            for i, p in enumerate(step_model.parameters()):
                p.grad.view(-1)[0] = float("nan") if i % 2 else float("inf")

    def snapshot(m, o):
        return [t.clone() for t in m.state_dict().values()] + [
            v.clone() for st in o.state.values() for v in st.values() if torch.is_tensor(v)]

    for m, o in zip(models, opts):  # one good step for all, so every state exists
        grads(m)
        o.found_inf = None if o is opts[0] else torch.zeros(())
        o.step()
    same = lambda: all(torch.allclose(a, b, rtol=1e-5, atol=1e-7)  # noqa: E731
                       for a, b in zip(snapshot(models[0], opts[0]), snapshot(models[1], opts[1])))
    assert same()
    before = snapshot(models[1], opts[1])
    grads(models[1], poison=True)
    opts[1].found_inf = torch.ones(())
    opts[1].step()
    after = snapshot(models[1], opts[1])
    assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(before, after))
    for m, o in ((models[0], opts[0]), (models[1], opts[1])):  # the next good step: the same result
        grads(m)
        o.found_inf = None if o is opts[0] else torch.zeros(())
        o.step()
    assert same()
    grads(models[2], poison=True)  # without found_inf the poisoned step does reach the weights
    opts[2].found_inf = None
    opts[2].step()
    assert not all(torch.isfinite(p).all() for p in models[2].parameters())
