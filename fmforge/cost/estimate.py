"""Training cost: FLOPs -> device-hours -> days, dollars, energy and CO2, and the inverse forms.

    device_hours = FLOPs / (MFU * peak * 3600)       days = device_hours / devices / 24
    usd = device_hours * price                        kWh = device_hours * TDP * PUE
    --days:       MFU implied = FLOPs / (devices * days * 86400 * peak)
    --budget-usd: tokens = budget / price * 3600 * peak * MFU / FLOPs-per-token
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from fmforge.config import ModelConfig, Recipe, TokenizerConfig
from fmforge.cost.checks import CostError, at_least, count, fraction, non_negative, positive
from fmforge.cost.memory import memory_report
from fmforge.cost.published import mfu_prior
from fmforge.hardware import Accelerator, get, identify
from fmforge.model.flops import count_params, flops_per_token
from fmforge.model.presets import PRESETS

# The LLaMA paper's carbon accounting (Touvron et al. 2023, Section 6): PUE 1.1 and the US
# national average grid, 0.385 kg CO2eq/kWh. With them, 1,022,362 A100-hours at 400 W give
# the paper's 449 MWh and 173 tCO2eq, so the defaults reproduce a published figure.
DEFAULT_PUE = 1.1
DEFAULT_GRID_KG_PER_KWH = 0.385
PARAMS_ONLY_SEQ_LEN = 2048  # activation estimate when only a parameter count is known


@dataclass
class ModelSpec:
    label: str
    params: int  # total, embeddings included
    flops_per_token: float
    formula: str
    cfg: ModelConfig  # the shape used for activation memory
    shape_inferred: bool  # True when only a parameter count was given
    micro_batch: int = 1
    loss_chunk_tokens: int | None = None  # train.loss_chunk_tokens: the head's memory (fmforge.cost.memory)

    @property
    def seq_len(self) -> int:
        return self.cfg.context_length

    def to_dict(self) -> dict:
        return {"label": self.label, "params": self.params, "n_layers": self.cfg.n_layers,
                "d_model": self.cfg.d_model, "seq_len": self.seq_len, "micro_batch": self.micro_batch,
                "shape_inferred": self.shape_inferred}


_PALM = "6·N·D + 12·L·d·T·D (PaLM: N non-embedding params incl. output head, L layers, d width, T seq len)"


def model_from_config(cfg: ModelConfig, label: str, micro_batch: int = 1) -> ModelSpec:
    micro_batch = count(micro_batch, "--micro-batch")
    return ModelSpec(label, count_params(cfg).total, flops_per_token(cfg), _PALM, cfg, False, micro_batch)


def model_from_preset(name: str, seq_len: int | None = None, micro_batch: int = 1) -> ModelSpec:
    if name not in PRESETS:
        raise CostError(f"--preset: unknown preset '{name}'; known: {', '.join(PRESETS)}")
    micro_batch = count(micro_batch, "--micro-batch")
    cfg = ModelConfig(**PRESETS[name])
    if not cfg.vocab_size:  # the preset (tiny) leaves it to the tokenizer: a recipe's default then
        cfg = cfg.model_copy(update={"vocab_size": TokenizerConfig().vocab_size})
    if seq_len is not None:
        seq_len = count(seq_len, "--seq-len")
        cfg = cfg.model_copy(update={"context_length": seq_len})
    return model_from_config(cfg, f"preset {name}", micro_batch)


def infer_shape(n_params: float, seq_len: int) -> ModelConfig:
    """A Llama-like shape of about n_params, for activation memory only.

    Published dense models keep d_model/n_layers near 128 (LLaMA-7B 4096/32, GPT-3 12288/96),
    and N ≈ 12·L·d², so d ≈ (128·N/12)^(1/3), rounded to a multiple of 128 (head width 128).
    """
    d = max(128, round((128 * n_params / 12) ** (1 / 3) / 128) * 128)
    layers = max(1, round(n_params / (12 * d * d)))
    return ModelConfig(vocab_size=32000, d_model=d, n_layers=layers, n_heads=d // 128,
                       context_length=seq_len, tie_embeddings=False)


def model_from_params(n_params: float, seq_len: int | None = None, micro_batch: int = 1,
                      flag: str = "--params") -> ModelSpec:
    n_params = positive(n_params, flag)
    micro_batch = count(micro_batch, "--micro-batch")
    seq_len = PARAMS_ONLY_SEQ_LEN if seq_len is None else count(seq_len, "--seq-len")
    cfg = infer_shape(n_params, seq_len)
    # Without a shape the attention term is unknown, so FLOPs are the plain 6·N·D.
    return ModelSpec(f"{n_params / 1e9:.4g}B params", int(n_params), 6.0 * n_params,
                     "6·N·D (no shape given: attention term omitted)", cfg, True, micro_batch)


def model_from_recipe(recipe: Recipe) -> ModelSpec:
    cfg = recipe.model
    if not cfg.vocab_size:  # the recipe leaves it to the tokenizer it trains
        cfg = cfg.model_copy(update={"vocab_size": recipe.tokenizer.vocab_size})
    spec = model_from_config(cfg, f"recipe {recipe.name}", recipe.train.micro_batch)
    spec.loss_chunk_tokens = recipe.train.loss_chunk_tokens or None
    return spec


def recipe_tokens(recipe: Recipe) -> int | None:
    t = recipe.train
    if t.max_tokens:
        return t.max_tokens
    if t.max_steps:
        return t.max_steps * (t.global_batch_tokens or t.micro_batch * recipe.model.context_length)
    return None


# ---------------------------------------------------------------- inputs from files


@dataclass
class Phase:
    accelerator: Accelerator
    devices: int
    hours: float
    price: float

    @property
    def device_hours(self) -> float:
        return self.devices * self.hours


def load_phases(path: str | Path, catalog: dict) -> list[Phase]:
    """A schedule file: `phases: [{accelerator, devices, hours, price?}, ...]` (price: catalog default)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CostError(f"cannot read phases file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CostError(f"phases file {path} is not text (not UTF-8): expected YAML") from None
    except yaml.YAMLError as e:
        raise CostError(f"phases file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    items = data.get("phases") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise CostError(f"phases file {path}: expected 'phases:' with a list of {{accelerator, devices, hours, price}}")
    phases = []
    for i, item in enumerate(items):
        where = f"phases file {path}: phases[{i}]"
        if not isinstance(item, dict):
            raise CostError(f"{where}: expected a mapping")
        unknown = set(item) - {"accelerator", "devices", "hours", "price", "name"}
        if unknown:
            raise CostError(f"{where}: unknown field '{sorted(unknown)[0]}'; allowed: accelerator, devices, hours, price, name")
        for key in ("accelerator", "devices", "hours"):
            if item.get(key) is None:
                raise CostError(f"{where}: missing field '{key}'")
        try:
            acc = get(str(item["accelerator"]), catalog)
        except KeyError as e:
            raise CostError(f"{where}: {e.args[0]}") from None
        devices, hours = count(item["devices"], f"{where}.devices"), positive(item["hours"], f"{where}.hours")
        price = non_negative(item["price"], f"{where}.price") if item.get("price") is not None \
            else acc.usd_per_hour
        phases.append(Phase(acc, devices, hours, price))
    return phases


def read_run_mfu(run_dir: str | Path) -> tuple[float, int, Path]:
    """Median MFU over the later half of a run's steps (the first steps include compilation)."""
    run_dir = Path(run_dir)
    path = next((p for p in (run_dir / "train" / "metrics.jsonl", run_dir / "metrics.jsonl") if p.is_file()), None)
    if path is None:
        raise CostError(f"--from-run {run_dir}: no train/metrics.jsonl or metrics.jsonl there")
    steps = []
    with open(path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:  # JSONDecodeError, UnicodeDecodeError
                continue  # a line cut short by a killed run
            if isinstance(row, dict) and isinstance(row.get("mfu"), (int, float)) and row["mfu"] > 0:
                steps.append((row.get("step", len(steps)), float(row["mfu"])))
    if not steps:
        raise CostError(f"--from-run {run_dir}: {path} has no steps with an 'mfu' value (was the device identified?)")
    later = [m for _, m in sorted(steps)[len(steps) // 2:]]
    return statistics.median(later), len(later), path


# ---------------------------------------------------------------- the estimate


def _energy(device_hours: float, acc: Accelerator, pue: float) -> float | None:
    return device_hours * acc.tdp_w / 1000 * pue if acc.tdp_w else None


def accelerator_dict(acc: Accelerator) -> dict:
    return {"name": acc.name, "bf16_tflops": acc.bf16_tflops, "memory_gb": acc.memory_gb, "tdp_w": acc.tdp_w,
            "usd_per_hour": acc.usd_per_hour, "price_source": acc.price_source, "price_date": acc.price_date}


def estimate(model: ModelSpec | None, tokens: float | None, acc: Accelerator, gpus: int = 1, *,
             mfu: float | None = None, mfu_source: str | None = None, price: float | None = None,
             days: float | None = None, budget_usd: float | None = None, phases: list[Phase] | None = None,
             pue: float = DEFAULT_PUE, grid_kg_per_kwh: float = DEFAULT_GRID_KG_PER_KWH,
             sharding: str = "auto") -> dict:
    """One JSON-ready dict; which inputs are given picks the mode (forward, days, budget, phases)."""
    if sum(x is not None for x in (days, budget_usd, phases)) > 1:
        raise CostError("give at most one of --days, --budget-usd, --phases")
    gpus = count(gpus, "--gpus")
    mfu = None if mfu is None else fraction(mfu, "--mfu")
    tokens = None if tokens is None else positive(tokens, "--tokens")
    days = None if days is None else positive(days, "--days")
    budget_usd = None if budget_usd is None else positive(budget_usd, "--budget-usd")
    pue, grid_kg_per_kwh = at_least(pue, 1.0, "--pue"), non_negative(grid_kg_per_kwh, "--grid")
    prior = mfu_prior()
    price = acc.usd_per_hour if price is None else non_negative(price, "--price")
    out: dict = {"model": model.to_dict() if model else None, "tokens": tokens,
                 "flops_per_token": model.flops_per_token if model else None, "formula": model.formula if model else None,
                 "accelerator": accelerator_dict(acc), "gpus": gpus, "price_per_hour": price,
                 "pue": pue, "grid_kg_co2_per_kwh": grid_kg_per_kwh,
                 "mfu_band": None, "device_hours_band": None, "usd_band": None}
    peak = acc.bf16_tflops * 1e12

    if budget_usd is not None:
        if model is None:
            raise CostError("--budget-usd needs a model: --preset, --recipe or --params")
        if price <= 0:
            raise CostError(f"--price must be positive to turn --budget-usd into tokens, got {price}")
        m = mfu or prior.median
        device_hours = budget_usd / price
        tokens = device_hours * 3600 * peak * m / model.flops_per_token
        out.update(mode="budget", budget_usd=budget_usd, mfu=m, mfu_source=mfu_source or _default_source(prior),
                   tokens=tokens, tokens_affordable=tokens)
        if mfu is None:
            out["mfu_band"] = [prior.low, prior.high]
            out["tokens_band"] = [tokens * prior.low / m, tokens * prior.high / m]
        flops, energy = model.flops_per_token * tokens, _energy(device_hours, acc, pue)
        wall_hours = device_hours / gpus
    elif phases is not None:
        device_hours = sum(p.device_hours for p in phases)
        flops = model.flops_per_token * tokens if model and tokens else None
        peak_seconds = sum(p.device_hours * 3600 * p.accelerator.bf16_tflops * 1e12 for p in phases)
        usd = sum(p.device_hours * p.price for p in phases)
        energies = [_energy(p.device_hours, p.accelerator, pue) for p in phases]
        energy = None if None in energies else sum(energies)
        wall_hours = sum(p.hours for p in phases)  # phases run one after another
        out.update(mode="phases", mfu=flops / peak_seconds if flops else None,
                   mfu_source="implied by the phases" if flops else None,
                   phases=[{"accelerator": p.accelerator.name, "devices": p.devices, "hours": p.hours,
                            "price": p.price, "device_hours": p.device_hours, "usd": p.device_hours * p.price}
                           for p in phases])
        acc, gpus = phases[0].accelerator, phases[0].devices  # memory is shown for the first phase
        out["accelerator"], out["price_per_hour"] = accelerator_dict(acc), None
    elif days is not None:
        device_hours, wall_hours = gpus * days * 24, days * 24
        flops = model.flops_per_token * tokens if model and tokens else None
        out.update(mode="days", mfu=flops / (device_hours * 3600 * peak) if flops else None,
                   mfu_source="implied by --days" if flops else None)
        energy = _energy(device_hours, acc, pue)
    else:
        if model is None or not tokens:
            raise CostError("need a model (--preset, --recipe or --params) and --tokens; "
                            "or --days / --phases for a known schedule")
        m = mfu or prior.median
        flops = model.flops_per_token * tokens
        device_hours = flops / (m * peak * 3600)
        wall_hours = device_hours / gpus
        out.update(mode="forward", mfu=m, mfu_source=mfu_source or _default_source(prior))
        if mfu is None:
            band = [flops / (prior.high * peak * 3600), flops / (prior.low * peak * 3600)]
            out.update(mfu_band=[prior.low, prior.high], device_hours_band=band,
                       usd_band=[band[0] * price, band[1] * price])
        energy = _energy(device_hours, acc, pue)

    if out["mode"] != "phases":
        usd = device_hours * price
    mem = memory_report(model, acc, gpus, sharding) if model else None
    out.update(flops=flops, device_hours=device_hours, days=wall_hours / 24, usd=usd,
               energy_kwh=energy, co2_t=energy * grid_kg_per_kwh / 1000 if energy is not None else None,
               memory=mem, memory_per_device_gb=mem["per_device_gb"] if mem else None)
    return out


def _default_source(prior) -> str:
    return (f"default: median of {prior.n} published runs "
            f"(band {prior.low:.0%}-{prior.high:.0%}, see docs/cost.md)")


# ---------------------------------------------------------------- what a finished run cost


def _resolve(accelerator: str | None) -> Accelerator | None:
    if not accelerator:
        return None
    try:
        return get(accelerator)
    except (KeyError, ValueError):
        return identify(accelerator)


def run_cost(flops_per_token: float, tokens: int, seconds: float, accelerator: str | None,
             devices: int, price_per_hour: float | None) -> dict:
    """What a finished run cost, for its report. Never raises on an unknown accelerator:
    the run happened, so device-hours are stated and the rest is left empty."""
    acc = _resolve(accelerator)
    device_hours = devices * seconds / 3600
    price = price_per_hour if price_per_hour is not None else (acc.usd_per_hour if acc else None)
    flops = flops_per_token * tokens
    mfu = flops / (devices * seconds * acc.bf16_tflops * 1e12) if acc and seconds > 0 else None
    energy = _energy(device_hours, acc, DEFAULT_PUE) if acc else None
    return {"accelerator": acc.name if acc else accelerator, "devices": devices, "seconds": seconds,
            "device_hours": device_hours, "price_per_hour": price,
            "price_source": ("given" if price_per_hour is not None else acc.price_source) if price is not None else None,
            "usd": device_hours * price if price is not None else None,
            "flops": flops, "tflops_per_device": flops / (devices * seconds) / 1e12 if seconds > 0 else None,
            "mfu": mfu, "energy_kwh": energy,
            "co2_kg": energy * DEFAULT_GRID_KG_PER_KWH if energy is not None else None}
