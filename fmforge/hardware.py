"""Accelerators: dense bf16 peak, memory, power and a default price.

Shared by the trainer's MFU meter and the cost estimator. Peaks are dense (no sparsity)
bf16 tensor-core figures from the vendors' data sheets.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    name: str
    bf16_tflops: float  # dense peak
    memory_gb: float
    tdp_w: float
    usd_per_hour: float  # a typical on-demand price, see `price_source`
    price_source: str = ""
    match: tuple[str, ...] = ()  # substrings of torch.cuda.get_device_name() that identify it


CATALOG: dict[str, Accelerator] = {
    a.name: a
    for a in [
        Accelerator("a100-40gb", 312, 40, 400, 3.93, "LLaMA paper's implied A100 price (2023)", ("A100-SXM4-40GB", "A100-PCIE-40GB")),
        Accelerator("a100-80gb", 312, 80, 400, 3.93, "LLaMA paper's implied A100 price (2023)", ("A100",)),
        Accelerator("h100-sxm", 989, 80, 700, 3.50, "typical cloud on-demand H100 SXM (2026)", ("H100 80GB HBM3", "H100 SXM")),
        Accelerator("h100-pcie", 756, 80, 350, 2.50, "typical cloud on-demand H100 PCIe (2026)", ("H100 PCIe",)),
        Accelerator("h200", 989, 141, 700, 4.00, "typical cloud on-demand H200 (2026)", ("H200",)),
        Accelerator("b200", 2250, 180, 1000, 6.00, "typical cloud on-demand B200 (2026)", ("B200",)),
        Accelerator("l40s", 362, 48, 350, 1.20, "typical cloud on-demand L40S (2026)", ("L40S",)),
        Accelerator("tpu-v4", 275, 32, 192, 3.22, "Google Cloud on-demand TPU v4 chip-hour", ()),
        Accelerator("tpu-v5e", 197, 16, 170, 1.20, "Google Cloud on-demand TPU v5e chip-hour", ()),
        Accelerator("tpu-v5p", 459, 95, 350, 4.20, "Google Cloud on-demand TPU v5p chip-hour", ()),
    ]
}


def identify(device_name: str) -> Accelerator | None:
    """The catalog entry for a CUDA device name, e.g. 'NVIDIA H200' -> h200."""
    for acc in CATALOG.values():
        if any(m in device_name for m in acc.match):
            return acc
    return None


def get(name: str) -> Accelerator:
    key = name.lower().replace("_", "-")
    aliases = {"h100": "h100-sxm", "a100": "a100-80gb", "v4": "tpu-v4", "v5e": "tpu-v5e", "v5p": "tpu-v5p"}
    key = aliases.get(key, key)
    if key not in CATALOG:
        raise KeyError(f"unknown accelerator '{name}'; known: {', '.join(CATALOG)}")
    return CATALOG[key]
