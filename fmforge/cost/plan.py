"""Plan a budget: what it pretrains compute-optimally, against fine-tuning a model that exists.

Compute-optimal allocation (Hoffmann et al. 2022, "Training Compute-Optimal Large Language
Models", arXiv:2203.15556) under C = 6·N·D:
  * the rule of thumb D ≈ 20·N, so N = sqrt(C / 120);
  * the parametric fit L(N, D) = E + A/N^α + B/D^β (their Approach 3, Eq. 10) with
    E = 1.69, A = 406.4, B = 410.7, α = 0.34, β = 0.28, minimised at fixed C:
    N = G·(C/6)^(β/(α+β)), D = (C/6)/N, G = (α·A / (β·B))^(1/(α+β)).
The loss is in nats per token of their MassiveText tokenizer: use it to rank options, not as
a prediction of your validation loss.

Fine-tuning FLOPs per token: full = the training FLOPs of the base; LoRA skips the weight
gradients of the frozen matmuls (2·N of the 6·N) and adds 6 FLOPs per adapter weight.
Fine-tuning memory is `fmforge finetune`'s (fmforge.cost.finetune_memory: a transformers model
under bf16 autocast, checked against the H200's measured peaks), not pretraining's.
"""
from __future__ import annotations

import math

from fmforge.cost.checks import CostError, count, fraction, non_negative, positive
from fmforge.cost import finetune_memory
from fmforge.cost.estimate import ModelSpec, model_from_params
from fmforge.cost.finetune_memory import lora_params
from fmforge.cost.memory import memory_report
from fmforge.cost.published import mfu_prior
from fmforge.hardware import Accelerator
from fmforge.model.flops import count_params

HOFFMANN = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
TOKENS_PER_PARAM = 20


def hoffmann_loss(n_params: float, tokens: float) -> float:
    h = HOFFMANN
    return h["E"] + h["A"] / n_params ** h["alpha"] + h["B"] / tokens ** h["beta"]


def chinchilla_rule(compute: float) -> tuple[float, float]:
    n = math.sqrt(compute / (6 * TOKENS_PER_PARAM))
    return n, TOKENS_PER_PARAM * n


def hoffmann_optimal(compute: float) -> tuple[float, float]:
    h = HOFFMANN
    a, b = h["alpha"], h["beta"]
    g = (a * h["A"] / (b * h["B"])) ** (1 / (a + b))
    n = g * (compute / 6) ** (b / (a + b))
    return n, compute / 6 / n


def _run(flops: float, acc: Accelerator, gpus: int, mfu: float, price: float) -> dict:
    device_hours = flops / (mfu * acc.bf16_tflops * 1e12 * 3600)
    return {"flops": flops, "device_hours": device_hours, "days": device_hours / gpus / 24,
            "usd": device_hours * price}


def _memory(model: ModelSpec, acc: Accelerator, gpus: int, trainable: float | None = None) -> dict:
    mem = memory_report(model, acc, gpus, trainable=trainable)
    fsdp = mem["schemes"]["fsdp"]
    return {"memory_per_device_gb": mem["per_device_gb"], "sharding": mem["sharding"],
            "min_devices": fsdp["min_devices"], "min_devices_checkpointed": mem["schemes"]["fsdp+ckpt"]["min_devices"]}


def _finetune_memory(base: ModelSpec, acc: Accelerator, gpus: int, method: str, rank: int, dropout: float) -> dict:
    """Per device on `gpus` devices (one: as `fmforge finetune` runs; more: FSDP-sharded states)."""
    kw = dict(rank=rank, dropout=dropout)
    args = (base.cfg, base.params, base.micro_batch, base.seq_len, method)
    row = finetune_memory.breakdown(*args, devices=gpus, **kw)
    return {"memory_per_device_gb": row["total_gb"], "sharding": "none" if gpus == 1 else "fsdp",
            "memory_breakdown": row, "micro_batch": base.micro_batch, "seq_len": base.seq_len,
            "min_devices": finetune_memory.min_devices(*args, acc.memory_gb, **kw),
            "min_devices_checkpointed": finetune_memory.min_devices(*args, acc.memory_gb, checkpointing=True, **kw)}


def plan(budget_usd: float, acc: Accelerator, gpus: int, base: ModelSpec, base_tokens: float,
         finetune_tokens: float, *, mfu: float | None = None, price: float | None = None,
         lora_rank: int = 8, lora_dropout: float = 0.05) -> dict:
    budget_usd = positive(budget_usd, "--budget-usd")
    gpus = count(gpus, "--gpus")
    base_tokens, finetune_tokens = positive(base_tokens, "--base-tokens"), positive(finetune_tokens, "--finetune-tokens")
    lora_rank = count(lora_rank, "--lora-rank")
    prior = mfu_prior()
    mfu = prior.median if mfu is None else fraction(mfu, "--mfu")
    price = acc.usd_per_hour if price is None else non_negative(price, "--price")
    if price <= 0:  # a free device makes any budget buy unlimited compute
        raise CostError(f"--price must be positive to plan a budget, got {price} ($ per device-hour)")
    device_hours = budget_usd / price
    compute = device_hours * 3600 * acc.bf16_tflops * 1e12 * mfu

    scratch = {}
    for key, (n, d) in (("rule_20_tokens_per_param", chinchilla_rule(compute)),
                        ("hoffmann_fit", hoffmann_optimal(compute))):
        spec = model_from_params(n)
        scratch[key] = {"params": n, "tokens": d, "tokens_per_param": d / n, "loss": hoffmann_loss(n, d),
                        "days": device_hours / gpus / 24, "usd": budget_usd, **_memory(spec, acc, gpus)}

    n_base = base.params
    non_emb = count_params(base.cfg).non_embedding if not base.shape_inferred else n_base
    n_lora = lora_params(base.cfg, lora_rank)
    full = {**_run(base.flops_per_token * finetune_tokens, acc, gpus, mfu, price),
            **_finetune_memory(base, acc, gpus, "full", lora_rank, lora_dropout)}
    lora_fpt = base.flops_per_token - 2 * non_emb + 6 * n_lora
    lora = {**_run(lora_fpt * finetune_tokens, acc, gpus, mfu, price), "lora_params": n_lora, "rank": lora_rank,
            **_finetune_memory(base, acc, gpus, "lora", lora_rank, lora_dropout)}
    pretrain_base = _run(base.flops_per_token * base_tokens, acc, gpus, mfu, price)

    result = {"budget_usd": budget_usd, "accelerator": acc.name, "gpus": gpus, "price_per_hour": price,
              "mfu": mfu, "mfu_band": [prior.low, prior.high], "device_hours": device_hours, "compute_flops": compute,
              "scratch": scratch,
              "base": {"label": base.label, "params": n_base, "tokens": base_tokens,
                       "loss": hoffmann_loss(n_base, base_tokens), "pretrain_usd": pretrain_base["usd"],
                       "pretrain_days": pretrain_base["days"]},
              "finetune": {"tokens": finetune_tokens, "full": full, "lora": lora}}
    result["choice"], result["recommendation"] = _recommend(result)
    return result


def human_count(x: float) -> str:
    """12.3M, 6.74B, 1.4T: parameter and token counts the way papers write them."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _usd(x: float) -> str:
    return f"${x:,.0f}" if x >= 100 else f"${x:,.2f}"


def _recommend(r: dict) -> tuple[str, str]:
    budget, base, ft = r["budget_usd"], r["base"], r["finetune"]
    s = r["scratch"]["rule_20_tokens_per_param"]
    lora, full = ft["lora"], ft["full"]
    if lora["usd"] > budget:
        affordable = ft["tokens"] * budget / lora["usd"]
        return "none", (f"Even LoRA on the {human_count(base['params'])} base costs {_usd(lora['usd'])} for "
                        f"{human_count(ft['tokens'])} tokens, over the {_usd(budget)} budget; it affords {human_count(affordable)} tokens.")
    # Full fine-tuning adapts every weight; take it when it is affordable and fits the devices given.
    method = "full" if full["usd"] <= budget and (full["min_devices"] or math.inf) <= r["gpus"] else "lora"
    pick = ft[method]
    both = (f"LoRA (rank {lora['rank']}, {human_count(lora['lora_params'])} adapter weights) costs {_usd(lora['usd'])} "
            f"and fits on {lora['min_devices'] or 'no number of'} device(s); full fine-tuning costs {_usd(full['usd'])} "
            f"and needs {full['min_devices'] or 'more than any number of'} device(s) of {r['accelerator']} with FSDP")
    ft_text = (f"{'full fine-tuning' if method == 'full' else 'LoRA'} of the {human_count(base['params'])} base "
               f"on {human_count(ft['tokens'])} tokens: {pick['device_hours']:,.1f} device-hours, "
               f"{budget / pick['usd']:,.0f}x less than the budget ({both})")
    if s["loss"] >= base["loss"]:
        return method, (f"Fine-tune. {_usd(budget)} pretrains a compute-optimal {human_count(s['params'])} model on "
                        f"{human_count(s['tokens'])} tokens (predicted loss {s['loss']:.3f}), worse than the base's "
                        f"{base['loss']:.3f} ({human_count(base['params'])} on {human_count(base['tokens'])} tokens, "
                        f"{_usd(base['pretrain_usd'])} to pretrain at these rates); {ft_text}.")
    return "scratch", (f"Pretraining is within reach: {_usd(budget)} trains a {human_count(s['params'])} model on "
                       f"{human_count(s['tokens'])} tokens to predicted loss {s['loss']:.3f}, below the base's {base['loss']:.3f}. "
                       f"Pretrain if you need your own data, tokenizer or license; otherwise {ft_text}.")
