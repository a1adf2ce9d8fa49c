"""Serving cost: dollars per million generated tokens from a measured throughput.

    usd_per_million = price_per_device_hour * devices / (tokens_per_s * 3600 * utilization) * 1e6

The throughput must be the server's total generated tokens per second at some load (all
concurrent requests together), measured on the hardware being priced. `utilization` is the
share of paid hours the server is actually that busy.

A bench file is JSON: one result object, a list of them, or {"results": [...]} (other keys,
such as "hardware" or "date", apply to every result). A result needs a throughput, either
  tokens_per_s | output_tokens_per_s | generated_tokens_per_s | throughput_tokens_per_s
or a count and a duration:
  generated_tokens | output_tokens   with   seconds | elapsed_s | duration_s | wall_s
and may say "hardware"/"accelerator"/"gpu", "devices"/"gpus" and "concurrency".
"""
from __future__ import annotations

import json
from pathlib import Path

from fmforge.cost.checks import CostError, count, fraction, non_negative
from fmforge.cost.estimate import _resolve
from fmforge.hardware import Accelerator

RATE_KEYS = ("output_tokens_per_s", "generated_tokens_per_s", "throughput_tokens_per_s", "tokens_per_s")
COUNT_KEYS = ("generated_tokens", "output_tokens")
TIME_KEYS = ("seconds", "elapsed_s", "duration_s", "wall_s")
HARDWARE_KEYS = ("accelerator", "hardware", "gpu", "device")
LOAD_KEYS = ("concurrency", "clients", "batch")


def find_bench(model_dir: str | Path | None, bench: str | Path | None) -> Path:
    if bench:
        return Path(bench)
    if model_dir:
        for candidate in (Path(model_dir) / "bench.json", Path(model_dir) / "serve" / "bench.json"):
            if candidate.is_file():
                return candidate
        raise CostError(f"no bench.json in {model_dir} or {model_dir}/serve; pass --from-bench FILE")
    raise CostError("pass --from-bench FILE (a serving benchmark JSON) or --model DIR holding bench.json")


def load_bench(path: str | Path) -> list[dict]:
    """Rows of {tokens_per_s, hardware, devices, concurrency} from a bench file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CostError(f"cannot read bench file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CostError(f"bench file {path} is not text (not UTF-8): expected JSON") from None
    except json.JSONDecodeError as e:
        raise CostError(f"bench file {path} is not valid JSON: {e}") from None
    shared: dict = {}
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        shared = {k: v for k, v in data.items() if k != "results"}
        items = data["results"]
    else:
        items = data if isinstance(data, list) else [data]
    rows = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise CostError(f"bench file {path}: result {i} is not an object")
        row = {**shared, **item}
        rows.append({"tokens_per_s": _rate(row, f"bench file {path}: result {i}"),
                     "hardware": next((str(row[k]) for k in HARDWARE_KEYS if row.get(k)), None),
                     "devices": _devices(row, f"bench file {path}: result {i}"),
                     "concurrency": next((row[k] for k in LOAD_KEYS if row.get(k) is not None), None)})
    if not rows:
        raise CostError(f"bench file {path}: no results")
    return rows


def _devices(row: dict, where: str) -> int:
    key = next((k for k in ("devices", "gpus") if row.get(k) is not None), None)
    return count(row[key], f"{where}: {key}") if key else 1


def _rate(row: dict, where: str) -> float:
    for k in RATE_KEYS:
        if isinstance(row.get(k), (int, float)) and row[k] > 0:
            return float(row[k])
    count = next((row[k] for k in COUNT_KEYS if isinstance(row.get(k), (int, float))), None)
    secs = next((row[k] for k in TIME_KEYS if isinstance(row.get(k), (int, float)) and row[k] > 0), None)
    if count is not None and secs is not None:
        return count / secs
    raise CostError(f"{where}: no throughput; expected one of {', '.join(RATE_KEYS)} "
                    f"or {'/'.join(COUNT_KEYS)} with {'/'.join(TIME_KEYS)}")


def serve_cost(rows: list[dict], acc: Accelerator | None, price: float | None, utilization: float = 1.0) -> dict:
    """$ per million generated tokens for each measured load; the best one is the headline."""
    utilization = fraction(utilization, "--utilization")
    price = None if price is None else non_negative(price, "--price")
    priced = []
    for row in rows:
        device = acc or _resolve(row["hardware"])
        per_hour = price if price is not None else (device.usd_per_hour if device else None)
        if per_hour is None:
            raise CostError(f"cannot price hardware {row['hardware']!r}: pass --price or --gpu")
        usd_per_hour = per_hour * row["devices"]
        priced.append({**row, "accelerator": device.name if device else row["hardware"],
                       "price_per_device_hour": per_hour, "usd_per_hour": usd_per_hour,
                       "usd_per_million_tokens": usd_per_hour / (row["tokens_per_s"] * 3600 * utilization) * 1e6,
                       "tokens_per_day": row["tokens_per_s"] * 86400 * utilization})
    best = min(priced, key=lambda r: r["usd_per_million_tokens"])
    return {"usd_per_million_tokens": best["usd_per_million_tokens"], "tokens_per_s": best["tokens_per_s"],
            "usd_per_hour": best["usd_per_hour"], "accelerator": best["accelerator"], "utilization": utilization,
            "results": priced}
