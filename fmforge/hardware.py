"""Accelerators: dense bf16 peak, memory, power and a default price, each with its source.

Shared by the trainer's MFU meter (`identify`, `.bf16_tflops`) and the cost estimator (`get`).
Peaks are dense (no 2:4 sparsity) bf16 tensor-core figures from the vendors' data sheets;
vendors print the sparse figure first, so each dense figure here is half of it.

Prices move every month and differ tenfold between providers, so every default price says
where and when it was seen. A user YAML overrides any field or adds accelerators::

    # ~/.config/fmforge/hardware.yaml, or the file named by $FMFORGE_HARDWARE or --catalog
    accelerators:
      h100-sxm: {usd_per_hour: 2.10, price_source: "our 1-year reservation", price_date: "2026-11"}
      mi300x: {bf16_tflops: 1307, memory_gb: 192, tdp_w: 750, usd_per_hour: 2.5,
               price_source: "...", price_date: "2026-10", match: ["MI300X"]}
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Accelerator:
    name: str
    bf16_tflops: float  # dense peak
    memory_gb: float
    tdp_w: float | None  # None: the vendor publishes no power figure
    usd_per_hour: float  # on-demand price of one device, see price_source / price_date
    price_source: str = ""
    match: tuple[str, ...] = ()  # substrings of torch.cuda.get_device_name() that identify it
    price_date: str = ""  # when the price was seen, YYYY-MM
    spec_source: str = ""  # where peak, memory and power come from


_NV_A100 = "NVIDIA A100 datasheet: BF16 312 TFLOPS dense (624 sparse), SXM4 400 W"
_NV_H100 = "NVIDIA H100 datasheet: BF16 1,979 TFLOPS sparse (SXM), 1,513 (PCIe); up to 700 W SXM, 350 W PCIe"
_MERCATUS = "mercatus-ai.com/blog/cloud-gpu-pricing, specialty-cloud on-demand range"
_GCP_TPU = "cloud.google.com/tpu/pricing, on-demand price per chip-hour (US regions)"

CATALOG: dict[str, Accelerator] = {
    a.name: a
    for a in [
        Accelerator("a100-40gb", 312, 40, 400, 1.10,
                    f"no 40GB quote found; low end of A100 80GB $1.10-1.50, {_MERCATUS}",
                    ("A100-SXM4-40GB", "A100-PCIE-40GB"), "2026-05", _NV_A100),
        Accelerator("a100-80gb", 312, 80, 400, 1.30, f"midpoint of $1.10-1.50, {_MERCATUS}",
                    ("A100",), "2026-05", _NV_A100),
        Accelerator("h100-sxm", 989, 80, 700, 3.00, f"midpoint of $2.50-3.50, {_MERCATUS}",
                    ("H100 80GB HBM3", "H100 SXM"), "2026-05", _NV_H100),
        Accelerator("h100-pcie", 756, 80, 350, 1.49, "io.net H100 PCIe on-demand (io.net FAQ, SXM vs PCIe)",
                    ("H100 PCIe",), "2026", _NV_H100),
        Accelerator("h200", 989, 141, 700, 4.00, f"midpoint of $3.50-4.50, {_MERCATUS}",
                    ("H200",), "2026-05",
                    "NVIDIA H200 datasheet: BF16 1,979 TFLOPS sparse, 141 GB HBM3e, up to 700 W (SXM)"),
        Accelerator("b200", 2250, 180, 1000, 5.25,
                    "midpoint of $4.50-6.00 specialized-cloud on-demand, lyceum.technology B200 pricing 2026",
                    ("B200",), "2026-03",
                    "NVIDIA HGX B200: BF16 36 PFLOPS sparse per 8 GPUs, 1.44 TB HBM3e per 8; 1,000 W per GPU"),
        Accelerator("l40s", 362, 48, 350, 1.86,
                    "AWS g6e (1x L40S) on-demand us-east-1, median of the on-demand column in modal.com/blog/nvidia-l40s-price-article",
                    ("L40S",), "2025-08", "NVIDIA L40S datasheet: BF16 362 TFLOPS dense (733 sparse), 48 GB, 350 W"),
        Accelerator("tpu-v4", 275, 32, 192, 3.22, _GCP_TPU, (), "2024",
                    "Cloud TPU v4 docs: 275 bf16 TFLOPS, 32 GiB HBM; 192 W max chip power as quoted from Jouppi et al. ISCA 2023 (not re-checked)"),
        Accelerator("tpu-v5e", 197, 16, None, 1.20, _GCP_TPU, (), "2024",
                    "Cloud TPU v5e docs: 197 bf16 TFLOPS, 16 GB HBM2; power not published"),
        Accelerator("tpu-v5p", 459, 95, None, 4.20, _GCP_TPU, (), "2024",
                    "Cloud TPU v5p docs: 459 bf16 TFLOPS, 95 GB HBM2e; power not published"),
    ]
}

ALIASES = {"h100": "h100-sxm", "a100": "a100-80gb", "v4": "tpu-v4", "v5e": "tpu-v5e", "v5p": "tpu-v5p"}

_FIELDS = {f.name for f in dataclasses.fields(Accelerator)} - {"name"}
_REQUIRED_NEW = {"bf16_tflops", "memory_gb", "usd_per_hour"}


def user_catalog_path() -> Path | None:
    """$FMFORGE_HARDWARE if set (an empty value disables the user file), else the XDG default."""
    env = os.environ.get("FMFORGE_HARDWARE")
    if env is not None:
        return Path(env) if env else None
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base / "fmforge" / "hardware.yaml"
    return path if path.exists() else None


def load_catalog(path: str | Path | None = None) -> dict[str, Accelerator]:
    """The built-in catalog with a user YAML's entries applied (`path`, else `user_catalog_path()`).

    Raises ValueError naming the file and the field when the YAML is unusable.
    """
    path = Path(path) if path else user_catalog_path()
    catalog = dict(CATALOG)
    if path is None:
        return catalog
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ValueError(f"cannot read hardware catalog {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"hardware catalog {path} is not valid YAML: {e}") from None
    entries = data.get("accelerators") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ValueError(f"hardware catalog {path}: expected a mapping 'accelerators: {{name: {{field: value}}}}'")
    for raw_name, fields in entries.items():
        name = str(raw_name).lower()
        catalog[name] = _entry(path, name, fields, catalog.get(ALIASES.get(name, name)))
    return catalog


def _entry(path: Path, name: str, fields: Any, base: Accelerator | None) -> Accelerator:
    where = f"hardware catalog {path}: accelerators.{name}"
    if not isinstance(fields, dict):
        raise ValueError(f"{where}: expected a mapping of fields")
    unknown = set(fields) - _FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_FIELDS))}")
    if base is None and not _REQUIRED_NEW <= set(fields):
        missing = ", ".join(sorted(_REQUIRED_NEW - set(fields)))
        raise ValueError(f"{where}: a new accelerator needs {missing}")
    values = dict(fields)
    for key in ("bf16_tflops", "memory_gb", "usd_per_hour", "tdp_w"):
        if key in values and values[key] is not None:
            try:
                values[key] = float(values[key])
            except (TypeError, ValueError):
                raise ValueError(f"{where}.{key}: expected a number, got {values[key]!r}") from None
            if values[key] < 0 or (key == "bf16_tflops" and values[key] == 0):
                raise ValueError(f"{where}.{key}: must be positive, got {values[key]}")
    if "match" in values:
        values["match"] = tuple(str(m) for m in (values["match"] or ()))
    for key in ("price_source", "price_date", "spec_source"):
        if key in values:
            values[key] = str(values[key])
    if base is not None:
        return dataclasses.replace(base, name=name, **values)
    values.setdefault("tdp_w", None)
    return Accelerator(name=name, **values)


def identify(device_name: str) -> Accelerator | None:
    """The catalog entry for a CUDA device name, e.g. 'NVIDIA H200' -> h200.

    A broken user catalog must not stop a training run: it is reported and skipped here.
    """
    try:
        catalog = load_catalog()
    except ValueError as e:
        warnings.warn(f"{e}; using the built-in accelerator catalog", stacklevel=2)
        catalog = CATALOG
    # Longest match first, so 'A100-SXM4-40GB' wins over the generic 'A100'.
    pairs = sorted(((m, acc) for acc in catalog.values() for m in acc.match), key=lambda p: -len(p[0]))
    for m, acc in pairs:
        if m in device_name:
            return acc
    return None


def get(name: str, catalog: dict[str, Accelerator] | None = None) -> Accelerator:
    """Look up an accelerator by catalog name or alias; KeyError lists the known names."""
    catalog = catalog if catalog is not None else load_catalog()
    key = name.lower().replace("_", "-")
    key = key if key in catalog else ALIASES.get(key, key)
    if key not in catalog:
        raise KeyError(f"unknown accelerator '{name}'; known: {', '.join(catalog)}")
    return catalog[key]


def markdown_table(catalog: dict[str, Accelerator] | None = None) -> str:
    """The catalog as docs/cost.md shows it."""
    rows = ["| name | bf16 dense TFLOP/s | memory GB | TDP W | $/device-hour | price source | price date | spec source |",
            "|---|---|---|---|---|---|---|---|"]
    for a in (catalog or CATALOG).values():
        rows.append(f"| {a.name} | {a.bf16_tflops:g} | {a.memory_gb:g} | {a.tdp_w if a.tdp_w else 'n/a'} "
                    f"| {a.usd_per_hour:.2f} | {a.price_source} | {a.price_date} | {a.spec_source} |")
    return "\n".join(rows)
