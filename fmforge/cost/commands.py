"""`fmforge cost ...`: estimate, plan, serve (mounted by fmforge.cli).

Every command prints a rich table on a terminal and one JSON object with --json. Input it
cannot use (unknown GPU, unreadable file, missing field, an impossible number) is a UserError:
one line on stderr and exit code 2. Every other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import json
import math
import re
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from fmforge.config import CostConfig
from fmforge.cost import estimate as est
from fmforge.cost.checks import CostError, count
from fmforge.cost.plan import human_count
from fmforge.errors import UserError
from fmforge.hardware import get, load_catalog, user_catalog_path
from fmforge.options import SetOpt, recipe_from

app = typer.Typer(help="Know the bill before you spend it: training cost, memory, budget plan, serving cost.\n\n"
                       "Example: fmforge cost estimate --preset llama-65b --tokens 1.4T --gpu a100-80gb --gpus 2048",
                  no_args_is_help=True)
console = Console()

CatalogOpt = typer.Option(None, "--catalog", help="hardware YAML overriding the built-in catalog "
                                                  "(default: $FMFORGE_HARDWARE or ~/.config/fmforge/hardware.yaml)")
JsonOpt = typer.Option(False, "--json", help="print one JSON object instead of a table")
_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def _count(text: Optional[str], flag: str) -> Optional[float]:
    """'65.2e9', '65.2B', '1.4T', '2_000_000' -> a number."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9][0-9_]*\.?[0-9_]*(?:[eE][+-]?[0-9]+)?)\s*([KkMmBbGgTt]?)\s*", text)
    if not m:
        raise CostError(f"{flag}: expected a number such as 65.2e9 or 65.2B, got {text!r}")
    return float(m.group(1).replace("_", "")) * _SUFFIX.get(m.group(2).upper(), 1.0)


def _guard(fn):
    """A UserError becomes one line on stderr and exit 2, also when this app runs on its own
    (typer's entry, CliRunner) rather than under fmforge.cli.main. Nothing else is caught:
    a ValueError or KeyError from a bug keeps its traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            raise typer.Exit(2)
    return wrapper


def _catalog(path: Optional[Path]) -> dict:
    try:
        return load_catalog(path)
    except UnicodeDecodeError:
        raise CostError(f"--catalog: hardware catalog {path or user_catalog_path()} is not text (not UTF-8): "
                        "expected YAML") from None
    except ValueError as e:  # fmforge.hardware reports an unusable catalog file as ValueError
        raise CostError(f"--catalog: {e}") from None


def _accelerator(name: str, catalog: dict):
    try:
        return get(name, catalog)
    except KeyError as e:
        raise CostError(f"--gpu: {e.args[0]}") from None


# ---------------------------------------------------------------- formatting


def _fmt(value, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "usd":
        return f"${value:,.0f}" if abs(value) >= 100 else f"${value:,.4g}"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "int":
        return f"{value:,.0f}"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-2):
            return f"{value:.3e}"
        return f"{value:,.2f}"
    return str(value)


def _band(pair, kind: str = "") -> str:
    return f"{_fmt(pair[0], kind)} - {_fmt(pair[1], kind)}" if pair else ""


def _emit(result: dict, as_json: bool, render) -> None:
    if as_json:
        print(json.dumps(result, default=_json_default))
    else:
        render(result)


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)


# ---------------------------------------------------------------- estimate


@app.command("estimate")
@_guard
def estimate_cmd(
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="recipe YAML or built-in name: model, tokens and cost section"),
    set_: Optional[List[str]] = SetOpt,
    preset: Optional[str] = typer.Option(None, "--preset", help="model preset, e.g. llama-65b"),
    params: Optional[str] = typer.Option(None, "--params", help="parameter count, e.g. 65.2e9 or 65.2B (no shape: FLOPs = 6ND)"),
    tokens: Optional[str] = typer.Option(None, "--tokens", help="training tokens, e.g. 1.4e12 or 1.4T"),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="accelerator from the catalog, e.g. a100-80gb, h100, tpu-v4"),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="devices training together"),
    mfu: Optional[float] = typer.Option(None, "--mfu", help="model FLOPs utilization, 0-1 (default: median of published runs)"),
    from_run: Optional[Path] = typer.Option(None, "--from-run", help="use the MFU measured by a run: DIR/train/metrics.jsonl or DIR/metrics.jsonl"),
    price: Optional[float] = typer.Option(None, "--price", help="$ per device-hour (default: the catalog's)"),
    days: Optional[float] = typer.Option(None, "--days", help="known wall-clock days: prints the MFU it implies"),
    budget_usd: Optional[float] = typer.Option(None, "--budget-usd", help="a budget: prints the tokens it affords"),
    phases: Optional[Path] = typer.Option(None, "--phases", help="multi-phase schedule YAML: phases: [{accelerator, devices, hours, price}]"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="sequence length (default: the model's context)"),
    micro_batch: Optional[int] = typer.Option(None, "--micro-batch", help="sequences per device per step, for activations"),
    sharding: str = typer.Option("auto", "--sharding", help="auto | none | ddp | fsdp (auto: none on 1 device, else fsdp)"),
    pue: float = typer.Option(est.DEFAULT_PUE, "--pue", help="data-centre power usage effectiveness"),
    grid: float = typer.Option(est.DEFAULT_GRID_KG_PER_KWH, "--grid", help="kg CO2eq per kWh"),
    catalog: Optional[Path] = CatalogOpt,
    as_json: bool = JsonOpt,
):
    """Training FLOPs, device-hours, days, dollars, energy, CO2 and memory per device.

    Examples:
      fmforge cost estimate --preset llama-65b --tokens 1.4T --gpu a100-80gb --gpus 2048
      fmforge cost estimate --params 65.2e9 --tokens 1.4e12 --gpu a100 --gpus 2048 --days 21 --price 3.93
      fmforge cost estimate --phases docs/examples/palm-540b-phases.yaml --params 540.35e9 --tokens 780e9
      fmforge cost estimate --preset llama-7b --gpu h100 --gpus 8 --budget-usd 50000 --json
    """
    cat = _catalog(catalog)
    r = recipe_from(recipe, set_) if recipe or set_ else None
    cost = r.cost if r else CostConfig()
    if preset and params:
        raise CostError("give --preset or --params, not both")
    if mfu is not None and from_run is not None:
        raise CostError("give --mfu or --from-run, not both")
    for value, flag in ((seq_len, "--seq-len"), (micro_batch, "--micro-batch")):
        if value is not None:  # checked here too: without a model they would go unused, unchecked
            count(value, flag)
    b = micro_batch if micro_batch is not None else (r.train.micro_batch if r and not (preset or params) else 1)
    if preset:
        model = est.model_from_preset(preset, seq_len, b)
    elif params:
        model = est.model_from_params(_count(params, "--params"), seq_len, b)
    elif r:
        model = est.model_from_recipe(r)
        if seq_len is not None:
            model = est.model_from_config(model.cfg.model_copy(update={"context_length": seq_len}), model.label, b)
        model.micro_batch, model.loss_chunk_tokens = b, r.train.loss_chunk_tokens or None
    else:
        model = None
    n_tokens = _count(tokens, "--tokens")  # 0 is refused by est.estimate, not replaced by the recipe's
    if n_tokens is None and r and not (preset or params):
        n_tokens = est.recipe_tokens(r)
    if r and model is not None and not n_tokens and days is None and budget_usd is None and phases is None:
        raise CostError(f"recipe {r.name} sets no token count (train.max_tokens or train.max_steps): pass --tokens")
    acc = _accelerator(gpu or cost.gpu, cat)
    mfu_source = "--mfu" if mfu is not None else ("recipe cost.mfu" if cost.mfu else None)
    mfu = mfu if mfu is not None else cost.mfu
    if from_run is not None:
        mfu, n_steps, path = est.read_run_mfu(from_run)
        mfu_source = f"measured: median of the last {n_steps} steps of {path}"
    result = est.estimate(model, n_tokens, acc, gpus if gpus is not None else cost.gpus, mfu=mfu, mfu_source=mfu_source,
                          price=price if price is not None else cost.price_per_hour, days=days,
                          budget_usd=budget_usd, phases=est.load_phases(phases, cat) if phases else None,
                          pue=pue, grid_kg_per_kwh=grid, sharding=sharding)
    _emit(result, as_json, _render_estimate)


def _render_estimate(r: dict) -> None:
    t = Table(title=f"cost estimate ({r['mode']})", show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_column(style="dim")
    m, acc = r["model"], r["accelerator"]
    if m:
        t.add_row("model", m["label"], f"{human_count(m['params'])} params, {m['n_layers']} layers x {m['d_model']}"
                  + (" (shape inferred from the count)" if m["shape_inferred"] else ""))
    if r.get("tokens"):
        t.add_row("tokens", _fmt(r["tokens"]), _band(r.get("tokens_band")))
    if r.get("flops"):
        t.add_row("training FLOPs", _fmt(r["flops"]), r["formula"])
    for p in r.get("phases") or []:
        t.add_row("phase", f"{p['devices']:,} x {p['hours']:,.0f} h", f"{p['accelerator']} at ${p['price']}/h = {_fmt(p['usd'], 'usd')}")
    t.add_row("accelerator", acc["name"], f"{acc['bf16_tflops']} TFLOP/s bf16, {acc['memory_gb']} GB, "
                                          f"${acc['usd_per_hour']}/h ({acc['price_source']}, {acc['price_date']})")
    if r["mode"] != "phases":
        t.add_row("devices", _fmt(r["gpus"], "int"), f"at ${r['price_per_hour']}/device-hour")
    t.add_row("MFU", _fmt(r["mfu"], "pct"), r.get("mfu_source") or "unknown: give --tokens and a model")
    if r.get("mfu_band"):
        t.add_row("MFU band", _band(r["mfu_band"], "pct"), "min-max of published runs")
    t.add_row("device-hours", _fmt(r["device_hours"], "int"), _band(r.get("device_hours_band"), "int"))
    t.add_row("wall-clock days", f"{r['days']:,.1f}", "")
    t.add_row("cost", _fmt(r["usd"], "usd"), _band(r.get("usd_band"), "usd"))
    if r["energy_kwh"] is None:
        t.add_row("energy", "-", "the vendor publishes no power figure for this device")
    else:
        t.add_row("energy", f"{r['energy_kwh'] / 1000:,.1f} MWh", f"TDP x PUE {r['pue']}")
        t.add_row("CO2", f"{r['co2_t']:,.1f} t", f"{r['grid_kg_co2_per_kwh']} kg CO2eq/kWh")
    console.print(t)
    mem = r.get("memory")
    if mem:
        chunk = f", loss in chunks of {mem['loss_chunk_tokens']:,} tokens" if mem.get("loss_chunk_tokens") else ""
        mt = Table(title=f"memory per device, GB (micro-batch {mem['micro_batch']} x {mem['seq_len']} tokens{chunk}, "
                         f"{mem['bytes_per_param']} B/param AdamW mixed precision, {mem['capacity_gb']} GB x {mem['usable_fraction']} usable)")
        for col in ("scheme", "devices", "weights", "grads", "optim", "acts", "total", "fits", "min dev"):
            mt.add_column(col, justify="right")
        for name, s in mem["schemes"].items():
            mt.add_row(name, _fmt(s["devices"], "int"), *(f"{s[k]:,.1f}" for k in
                       ("weights_gb", "gradients_gb", "optimizer_gb", "activations_gb", "total_gb")),
                       "yes" if s["fits"] else "no", _fmt(s["min_devices"], "int") if s["min_devices"] else "none")
        console.print(mt)


# ---------------------------------------------------------------- plan


@app.command("plan")
@_guard
def plan_cmd(
    budget_usd: float = typer.Option(..., "--budget-usd", help="money to spend, $"),
    gpu: str = typer.Option(CostConfig().gpu, "--gpu", help="accelerator from the catalog"),
    gpus: int = typer.Option(8, "--gpus", help="devices available"),
    mfu: Optional[float] = typer.Option(None, "--mfu", help="MFU, 0-1 (default: median of published runs)"),
    price: Optional[float] = typer.Option(None, "--price", help="$ per device-hour (default: the catalog's)"),
    base_preset: str = typer.Option("llama-7b", "--base-preset", help="the pre-trained model you could fine-tune"),
    base_params: Optional[str] = typer.Option(None, "--base-params", help="its size instead of a preset, e.g. 7B"),
    base_tokens: str = typer.Option("1T", "--base-tokens", help="tokens the base was pretrained on"),
    finetune_tokens: str = typer.Option("100M", "--finetune-tokens", help="your fine-tuning tokens"),
    lora_rank: int = typer.Option(8, "--lora-rank", help="LoRA rank"),
    micro_batch: int = typer.Option(1, "--micro-batch", help="fine-tuning sequences per device per step, for memory"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="fine-tuning sequence length (default: the "
                                                                 "base's context)"),
    catalog: Optional[Path] = CatalogOpt,
    as_json: bool = JsonOpt,
):
    """Compute-optimal model for a budget (Chinchilla) vs fine-tuning an existing model, with a recommendation.

    Example: fmforge cost plan --budget-usd 50000 --gpu h100 --base-preset llama-7b --finetune-tokens 200M
    """
    from fmforge.cost.plan import plan

    acc = _accelerator(gpu, _catalog(catalog))
    base = (est.model_from_params(_count(base_params, "--base-params"), seq_len, micro_batch, flag="--base-params")
            if base_params else est.model_from_preset(base_preset, seq_len, micro_batch))
    result = plan(budget_usd, acc, gpus, base, _count(base_tokens, "--base-tokens"),
                  _count(finetune_tokens, "--finetune-tokens"), mfu=mfu, price=price, lora_rank=lora_rank)
    _emit(result, as_json, _render_plan)


def _render_plan(r: dict) -> None:
    console.print(f"budget {_fmt(r['budget_usd'], 'usd')} = {r['device_hours']:,.0f} {r['accelerator']}-hours at "
                  f"${r['price_per_hour']}/h = {r['compute_flops']:.3e} FLOPs at MFU {r['mfu']:.1%} "
                  f"(band {_band(r['mfu_band'], 'pct')})")
    human = human_count
    t = Table(title="scratch vs fine-tune")
    for col in ("option", "params", "tokens", "cost", "days", "GB/dev", "min dev", "loss"):
        t.add_column(col, justify="right")
    for key, s in r["scratch"].items():
        label = "scratch, 20 tok/param" if key.startswith("rule") else "scratch, Hoffmann fit"
        t.add_row(label, human(s["params"]), human(s["tokens"]), _fmt(s["usd"], "usd"),
                  f"{s['days']:,.1f}", f"{s['memory_per_device_gb']:,.1f}", _fmt(s["min_devices"], "int"), f"{s['loss']:.3f}")
    b = r["base"]
    t.add_row(f"pretrain base ({b['label']})", human(b["params"]), human(b["tokens"]), _fmt(b["pretrain_usd"], "usd"),
              f"{b['pretrain_days']:,.1f}", "", "", f"{b['loss']:.3f}")
    for key in ("full", "lora"):
        f = r["finetune"][key]
        t.add_row(f"fine-tune {key}", human(b["params"]), human(r["finetune"]["tokens"]), _fmt(f["usd"], "usd"),
                  f"{f['days']:,.2f}", f"{f['memory_per_device_gb']:,.1f}", _fmt(f["min_devices"], "int"), "")
    console.print(t)
    console.print(f"[bold]recommendation ({r['choice']}):[/bold] {r['recommendation']}")


# ---------------------------------------------------------------- serve


@app.command("serve")
@_guard
def serve_cmd(
    model: Optional[Path] = typer.Option(None, "--model", help="served model folder (its bench.json is used when --from-bench is not given)"),
    from_bench: Optional[Path] = typer.Option(None, "--from-bench", help="serving benchmark JSON with generated tokens/s"),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="accelerator to price (default: the bench's hardware)"),
    price: Optional[float] = typer.Option(None, "--price", help="$ per device-hour"),
    utilization: float = typer.Option(1.0, "--utilization", help="share of paid hours the server is that busy"),
    catalog: Optional[Path] = CatalogOpt,
    as_json: bool = JsonOpt,
):
    """Dollars per million generated tokens from measured serving throughput.

    Example: fmforge cost serve --model runs/demo/train --from-bench runs/demo/serve/bench.json --gpu h100
    """
    from fmforge.cost.serving import find_bench, load_bench, serve_cost

    cat = _catalog(catalog)
    acc = _accelerator(gpu, cat) if gpu else None
    path = find_bench(model, from_bench)
    result = serve_cost(load_bench(path), acc, price, utilization)
    result.update(model=str(model) if model else None, bench=str(path))
    _emit(result, as_json, _render_serve)


def _render_serve(r: dict) -> None:
    t = Table(title=f"serving cost ({r['bench']})")
    for col in ("accelerator", "devices", "concurrency", "tokens/s", "$/hour", "$ per 1M tokens"):
        t.add_column(col, justify="right")
    for row in r["results"]:
        t.add_row(str(row["accelerator"]), str(row["devices"]), str(row["concurrency"] or "-"),
                  f"{row['tokens_per_s']:,.1f}", f"{row['usd_per_hour']:,.2f}", f"{row['usd_per_million_tokens']:,.4g}")
    console.print(t)
    console.print(f"best: ${r['usd_per_million_tokens']:,.4g} per million generated tokens at "
                  f"{r['tokens_per_s']:,.1f} tokens/s and {r['utilization']:.0%} utilization")
