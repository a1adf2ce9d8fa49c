"""Published training runs and the MFU their reported device-hours imply.

The estimator's default MFU is the median over these runs, and its band is their min-max:
we only know how fast real runs went end to end (downtime, restarts and evaluation included),
so that is what an estimate should assume until the user measures their own.

Each run's FLOPs come from the shared model arithmetic (`fmforge.model.flops`, PaLM's
6N + 12·L·d·T per token) applied to the paper's shape. `python -m fmforge.cost.published`
prints the table that docs/cost.md shows.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import lru_cache

from fmforge import hardware
from fmforge.config import ModelConfig
from fmforge.model.flops import count_params, flops_per_token
from fmforge.model.presets import PRESETS


@dataclass(frozen=True)
class PublishedRun:
    name: str
    shape: dict  # ModelConfig fields (context_length = training sequence length)
    params_reported: float
    tokens: float
    device_hours: float
    accelerator: str  # catalog name, or a label when peak_tflops is given
    source: str
    peak_tflops: float | None = None  # only for hardware outside the catalog
    note: str = ""

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(**self.shape)

    @property
    def peak(self) -> float:
        return self.peak_tflops or hardware.CATALOG[self.accelerator].bf16_tflops

    @property
    def flops(self) -> float:
        return flops_per_token(self.model) * self.tokens

    @property
    def implied_mfu(self) -> float:
        return self.flops / (self.device_hours * 3600 * self.peak * 1e12)


def _llama(preset: str, **changes) -> dict:
    return {**PRESETS[preset], **changes}


_L1 = "Touvron et al. 2023, LLaMA, arXiv:2302.13971, Table 15 (GPU-hours) and Table 2"
_L2 = "Touvron et al. 2023, Llama 2, arXiv:2307.09288, Table 2 (GPU-hours) and Table 1"
_L31 = "Llama 3.1 model card (huggingface.co/meta-llama/Llama-3.1-8B), 'Training Time (GPU hours)'"
_L3_SHAPE = dict(vocab_size=128256, n_kv_heads=8, context_length=8192, rope_base=500000.0, tie_embeddings=False)

RUNS: list[PublishedRun] = [
    PublishedRun("LLaMA-7B", _llama("llama-7b"), 6.7e9, 1.0e12, 82_432, "a100-80gb", _L1),
    PublishedRun("LLaMA-13B", _llama("llama-13b"), 13.0e9, 1.0e12, 135_168, "a100-80gb", _L1),
    PublishedRun("LLaMA-33B", _llama("llama-33b"), 32.5e9, 1.4e12, 530_432, "a100-80gb", _L1),
    PublishedRun("LLaMA-65B", _llama("llama-65b"), 65.2e9, 1.4e12, 1_022_362, "a100-80gb", _L1),
    PublishedRun("Llama-2-7B", _llama("llama-7b", context_length=4096), 7e9, 2.0e12, 184_320, "a100-80gb", _L2),
    PublishedRun("Llama-2-13B", _llama("llama-13b", context_length=4096), 13e9, 2.0e12, 368_640, "a100-80gb", _L2),
    PublishedRun("Llama-2-70B", _llama("llama-65b", n_kv_heads=8, ffn_dim=28672, context_length=4096),
                 70e9, 2.0e12, 1_720_320, "a100-80gb", _L2),
    PublishedRun("Llama-3.1-8B", dict(d_model=4096, n_layers=32, n_heads=32, ffn_dim=14336, **_L3_SHAPE),
                 8e9, 15e12, 1_460_000, "h100-sxm", _L31,
                 note="the card says 15T+ tokens; its GPU-hours may include long-context and annealing stages"),
    PublishedRun("Llama-3.1-70B", dict(d_model=8192, n_layers=80, n_heads=64, ffn_dim=28672, **_L3_SHAPE),
                 70e9, 15e12, 7_000_000, "h100-sxm", _L31, note="as for 8B"),
    PublishedRun("Llama-3.1-405B", dict(d_model=16384, n_layers=126, n_heads=128, ffn_dim=53248, **_L3_SHAPE),
                 405e9, 15.6e12, 30_840_000, "h100-sxm",
                 _L31 + "; 15.6T tokens from Dubey et al. 2024, arXiv:2407.21783, Section 3"),
    PublishedRun("PaLM-540B",
                 # PaLM's 48 heads of width 256 do not span d_model, which ModelConfig cannot express;
                 # ffn_dim is set so the parameter count matches the published 540.35B instead.
                 dict(vocab_size=256000, d_model=18432, n_layers=118, n_heads=48, n_kv_heads=1, ffn_dim=69545,
                      context_length=2048, tie_embeddings=True),
                 540.35e9, 780e9, 6144 * 1200 + 3072 * 336, "tpu-v4",
                 "Chowdhery et al. 2022, PaLM, arXiv:2204.02311: 6144 TPU v4 chips x 1200 h + 3072 x 336 h, "
                 "including downtime and repeated steps; 780B tokens",
                 note="the paper's steady-state MFU is 46.2%; the gap is downtime and repeated steps"),
    PublishedRun("BLOOM-176B",
                 dict(vocab_size=250880, d_model=14336, n_layers=70, n_heads=112, ffn_dim=38229,
                      context_length=2048, tie_embeddings=True),
                 176.247e9, 366e9, 1_082_990, "a100-80gb",
                 "BigScience 2022, BLOOM, arXiv:2211.05100: 1,082,990 compute hours on 384 A100 80GB, 366B tokens",
                 note="GELU MLP of width 4d modelled as SwiGLU of width 8d/3 (same weights); sustained 150-156 TFLOP/s reported"),
    PublishedRun("GPT-3-175B",
                 dict(vocab_size=50257, d_model=12288, n_layers=96, n_heads=96, ffn_dim=32768,
                      context_length=2048, tie_embeddings=True),
                 175e9, 300e9, 10_000 * 14.8 * 24, "v100 (fp16)",
                 "Patterson et al. 2021, arXiv:2104.10350, Table 4: 10,000 V100 x 14.8 days; "
                 "Brown et al. 2020: 300B tokens",
                 peak_tflops=125,
                 note="V100 has no bf16: its 125 TFLOP/s fp16 tensor peak is used"),
]


@dataclass(frozen=True)
class MfuPrior:
    median: float
    low: float
    high: float
    n: int


@lru_cache(maxsize=1)
def mfu_prior() -> MfuPrior:
    """Median and min-max of the MFU the published runs imply."""
    values = [r.implied_mfu for r in RUNS]
    return MfuPrior(statistics.median(values), min(values), max(values), len(values))


def default_mfu() -> float:
    return mfu_prior().median


def markdown_table() -> str:
    """The published-runs table of docs/cost.md, with how well the default MFU predicts each run."""
    prior = mfu_prior()
    rows = ["| run | hardware | N reported | N (shape) | tokens | device-hours | FLOPs | implied MFU "
            "| predicted device-hours at default | error |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    errors = []
    for r in RUNS:
        predicted = r.flops / (prior.median * r.peak * 1e12 * 3600)
        err = predicted / r.device_hours - 1
        errors.append(abs(err))
        n_shape = count_params(r.model).total
        rows.append(f"| {r.name} | {r.accelerator} | {r.params_reported / 1e9:.1f}B | {n_shape / 1e9:.1f}B "
                    f"| {r.tokens / 1e12:.2f}T | {r.device_hours:,.0f} | {r.flops:.3g} | {r.implied_mfu:.1%} "
                    f"| {predicted:,.0f} | {err:+.0%} |")
    rows.append("")
    rows.append(f"Default MFU (median of {prior.n} runs): **{prior.median:.1%}**; band (min-max): "
                f"{prior.low:.1%}-{prior.high:.1%}. Median absolute error of device-hours predicted "
                f"at the default: {statistics.median(errors):.0%}; worst: {max(errors):.0%}.")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
