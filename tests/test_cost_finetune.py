"""`fmforge cost plan`'s fine-tuning memory: the tensors autograd keeps, counted on a CPU model,
and the peaks measured on the H200 (benchmarks/results/finetune_throughput-*.json)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmforge.config import ModelConfig
from fmforge.cost import finetune_memory as fm

ROOT = Path(__file__).resolve().parents[1]


def _census(cfg: ModelConfig, method: str, batch: int, seq: int, rank: int) -> int:
    """Bytes of every distinct storage autograd saves for the backward (parameters excluded) in
    one `fmforge finetune` forward + loss, bf16 autocast on the CPU, LoRA without dropout (CPU
    dropout keeps a mask unlike CUDA's)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from transformers import AutoConfig, AutoModelForCausalLM

    from fmforge.config import FinetuneConfig
    from fmforge.export.hf import hf_config
    from fmforge.finetune.data import IGNORE, Example
    from fmforge.finetune.loop import Runtime, collate, loss_sum
    from fmforge.finetune.run import prepare_model

    hc = hf_config(cfg, 0, 1)
    arch = hc.pop("model_type")
    conf = AutoConfig.for_model(arch, **{k: v for k, v in hc.items() if k not in ("architectures", "torch_dtype")})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(conf, attn_implementation="sdpa").float()
    rt = Runtime(torch.device("cpu"), torch.bfloat16)
    fc = FinetuneConfig(method=method, device="cpu", lora={"r": rank, "alpha": 2 * rank, "dropout": 0.0})
    if method != "full":
        model.to(torch.bfloat16)
    net = prepare_model(model, fc, rt, placed=True).train()
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, cfg.vocab_size, (batch, seq), generator=g).tolist()
    batch_ = collate([Example(r, [IGNORE] * (seq // 2) + r[seq // 2:]) for r in ids], 0, rt.device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_sum(net, batch_, rt)
    return sum(seen.values())


@pytest.mark.parametrize("method", ["full", "lora"])
def test_saved_bytes_equal_what_autograd_keeps(method):
    # an odd shape (3 query heads per KV head, f not a multiple of d)
    cfg = ModelConfig(vocab_size=384, d_model=96, n_layers=3, n_heads=6, n_kv_heads=2, ffn_dim=200,
                      context_length=64, tie_embeddings=False)
    batch, seq, rank = 2, 40, 4
    got = _census(cfg, method, batch, seq, rank)
    # autocast's bf16 copies of the weights it multiplies are kept too: the plan counts them as weights
    assert fm.saved_bytes(cfg, method, batch, seq, rank, dropout=0.0) + fm.weight_copies(cfg, method, rank) == got


@pytest.mark.parametrize("case, method", [("fmforge-full", "full"), ("fmforge-lora", "lora"),
                                          ("hf-trainer-lora", "lora")])
def test_plan_agrees_with_the_measured_peaks(case, method):
    """The plan's per-device memory for the benchmark's shape is within 3% of the H200's peak
    (torch.cuda.max_memory_allocated over the steps; LoRA dropout 0.05, finetune's default)."""
    from fmforge.cost.estimate import model_from_preset
    from fmforge.cost.plan import plan
    from fmforge.hardware import get

    files = sorted((ROOT / "benchmarks" / "results").glob("finetune_throughput-*.json"))
    runs = [json.loads(f.read_text()) for f in files]
    runs = [r for r in runs if r["hardware"].get("gpu") and not r["args"]["tiny"]]
    if not runs:
        pytest.skip("no GPU fine-tuning result")
    r = runs[-1]
    got = next(x for x in r["results"] if x["case"] == case)
    spec = model_from_preset(r["preset"], r["seq"], r["micro_batch"])
    p = plan(1e6, get("h200"), 1, spec, 1e12, 1e8, lora_rank=r["lora_rank"])
    assert p["finetune"][method]["memory_per_device_gb"] == pytest.approx(got["peak_memory_gb"], rel=0.03)
    assert got["trainable_params"] == fm.breakdown(spec.cfg, spec.params, r["micro_batch"], r["seq"], method,
                                                   rank=r["lora_rank"])["trainable_params"]


def test_cli_plan_takes_the_fine_tuning_shape():
    from typer.testing import CliRunner

    from fmforge.cost.commands import app

    res = CliRunner().invoke(app, ["plan", "--budget-usd", "1000", "--gpu", "h200", "--gpus", "1", "--base-preset",
                                   "llama-1b", "--micro-batch", "8", "--seq-len", "2048", "--json"])
    assert res.exit_code == 0, res.output
    lora = json.loads(res.stdout)["finetune"]["lora"]
    assert (lora["micro_batch"], lora["seq_len"]) == (8, 2048)
    # by hand: bf16 base + fp32 adapters, Adam's two moments, the layers' kept tensors with the
    # dropout mask, the final norm, the loss's 12 bytes a vocabulary entry, rotary, targets
    from fmforge.config import ModelConfig
    from fmforge.model.presets import PRESETS

    cfg = ModelConfig(**PRESETS["llama-1b"])
    d, kv, f, v, n_lora = 2048, 256, 5632, 32000, 6307840
    layer = 8 * d + 8 + 4 * d + 4 * kv + 4 * 32 + 6 * f + 3 * (6 * d + f) + 7 * 2 * 8
    tokens = 8 * 2048
    want = (2 * 1100048384 + 4 * n_lora + 2 * (n_lora - 3 * 8 * d) + 8 * n_lora
            + tokens * (22 * layer + 8 + 12 * v) + 2 * 64 * 2048 * 2 + 4)
    assert lora["memory_per_device_gb"] == pytest.approx(want / 1e9, rel=1e-9)
    assert lora["lora_params"] == n_lora and cfg.d_model == d
    bad = CliRunner().invoke(app, ["plan", "--budget-usd", "1000", "--micro-batch", "0"])
    assert bad.exit_code == 2 and "--micro-batch" in bad.stderr
