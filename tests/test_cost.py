"""The cost stage: the seed's two worked examples, the model arithmetic, memory, inverse forms, CLI.

Expected figures are written out by hand (from the papers and the seed), not recomputed with
the code under test, so a wrong formula fails here.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmforge import hardware
from fmforge.config import ModelConfig
from fmforge.cost import estimate as est
from fmforge.cost import memory, plan, published
from fmforge.cost.commands import app
from fmforge.cost.estimate import CostError, run_cost
from fmforge.model.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
PALM_PHASES = ROOT / "docs" / "examples" / "palm-540b-phases.yaml"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _builtin_catalog(monkeypatch):
    monkeypatch.setenv("FMFORGE_HARDWARE", "")  # a user's ~/.config file must not change the figures


def cli_json(*args: str) -> dict:
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def close(x: float, expected: float, rel: float = 0.005) -> bool:
    return abs(x - expected) <= rel * abs(expected)


# ---------------------------------------------------------------- the seed's examples


def test_llama_65b_seed_example_dollars_and_implied_mfu():
    r = cli_json("estimate", "--params", "65.2e9", "--tokens", "1.4e12", "--gpu", "a100-80gb",
                 "--gpus", "2048", "--days", "21", "--price", "3.93")
    assert close(r["usd"], 4.06e6)  # the seed: $4.06M
    assert r["device_hours"] == 2048 * 21 * 24
    # 6 · 65.2e9 · 1.4e12 = 5.4768e23 FLOPs over 2048 · 21 · 86400 s at 312 TFLOP/s -> 47.24 %
    assert close(r["mfu"], 0.4724)
    # and the paper's own throughput, 380 tokens/s/GPU, is the same MFU: 380 · 6 · 65.2e9 / 312e12
    assert close(r["mfu"], 380 * 6 * 65.2e9 / 312e12, rel=0.02)
    assert r["days"] == pytest.approx(21)
    for key in ("flops", "device_hours", "days", "usd", "mfu", "memory_per_device_gb"):
        assert key in r


def test_palm_540b_seed_example_via_phases():
    r = cli_json("estimate", "--phases", str(PALM_PHASES))
    assert close(r["usd"], 27.06e6)  # the seed: $27.06M
    assert r["device_hours"] == 6144 * 1200 + 3072 * 336
    assert r["days"] == pytest.approx((1200 + 336) / 24)
    with_model = cli_json("estimate", "--phases", str(PALM_PHASES), "--params", "540.35B", "--tokens", "780B")
    # 6 · 540.35e9 · 780e9 FLOPs over 8,404,992 chip-hours at 275 TFLOP/s -> 30.4 %
    assert close(with_model["mfu"], 0.3041)


def test_phase_price_defaults_to_the_catalog(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("phases:\n  - {accelerator: tpu-v4, devices: 10, hours: 2}\n  - {accelerator: h100, devices: 1, hours: 1, price: 2.5}\n")
    r = cli_json("estimate", "--phases", str(f))
    assert r["usd"] == pytest.approx(10 * 2 * hardware.get("tpu-v4").usd_per_hour + 2.5)


def test_llama_paper_energy_and_carbon_reproduced_by_the_defaults():
    # LLaMA-65B: 1,022,362 GPU-hours at 400 W, PUE 1.1, 0.385 kg/kWh -> the paper's 449 MWh and 173 tCO2eq
    r = est.estimate(None, None, hardware.get("a100-80gb"), 1, days=1_022_362 / 24)
    assert close(r["energy_kwh"], 449_000, rel=0.005)
    assert close(r["co2_t"], 173, rel=0.005)


# ---------------------------------------------------------------- presets: parameters and FLOPs


def test_llama_65b_preset_params_and_flops():
    r = cli_json("estimate", "--preset", "llama-65b", "--tokens", "1.4T", "--gpu", "a100-80gb", "--gpus", "2048")
    # 80 · (4·8192² + 3·8192·22016 + 2·8192) + 2 · 32000 · 8192 + 8192
    assert r["model"]["params"] == 65_285_660_672
    assert close(r["model"]["params"], 65.2e9, rel=0.01)  # the paper's 65.2B
    # 6 · (params - input embedding) + 12 · 80 · 8192 · 2048
    assert r["flops_per_token"] == 6 * (65_285_660_672 - 32000 * 8192) + 12 * 80 * 8192 * 2048
    assert r["flops"] == pytest.approx(406_247_227_392 * 1.4e12)


def test_gpt2_124m_preset_params_and_flops():
    r = cli_json("estimate", "--preset", "gpt2-124m", "--tokens", "1e9", "--gpu", "h100")
    # 12 · (4·768² + 3·768·2048 + 2·768) + 50304 · 768 (tied head) + 768
    assert r["model"]["params"] == 123_587_328
    assert close(r["model"]["params"], 124e6, rel=0.01)
    assert r["flops_per_token"] == 6 * 123_587_328 + 12 * 12 * 768 * 1024


# ---------------------------------------------------------------- default MFU and its band


def test_default_mfu_is_the_median_of_published_runs_and_used_when_none_given():
    implied = [run.implied_mfu for run in published.RUNS]
    prior = published.mfu_prior()
    assert prior.median == statistics.median(implied) and prior.low == min(implied) and prior.high == max(implied)
    assert 0.3 < prior.median < 0.5 and prior.low < prior.median < prior.high
    r = cli_json("estimate", "--params", "7e9", "--tokens", "1e12", "--gpu", "h100")
    assert r["mfu"] == pytest.approx(prior.median)
    assert r["device_hours"] == pytest.approx(6 * 7e9 * 1e12 / (prior.median * 989e12 * 3600))
    lo, hi = r["device_hours_band"]
    assert lo < r["device_hours"] < hi and r["mfu_band"] == pytest.approx([prior.low, prior.high])


def test_published_llama_65b_implied_mfu():
    run = next(r for r in published.RUNS if r.name == "LLaMA-65B")
    assert close(run.implied_mfu, 406_247_227_392 * 1.4e12 / (1_022_362 * 3600 * 312e12))


# ---------------------------------------------------------------- memory


def test_7b_adamw_mixed_precision_is_16_bytes_per_param_plus_activations():
    cfg = ModelConfig(**PRESETS["llama-7b"])
    n = 6_738_415_616
    m = memory.breakdown(n, cfg, micro_batch=1, seq_len=2048, devices=1, sharding="none", checkpointing=False)
    assert (m["weights_gb"] + m["gradients_gb"] + m["optimizer_gb"]) * 1e9 == pytest.approx(16 * n)
    assert (m["weights_gb"], m["gradients_gb"], m["optimizer_gb"]) == pytest.approx((2 * n / 1e9, 2 * n / 1e9, 12 * n / 1e9))
    # per token per layer, 2 bytes each: 6·4096 (block I/O, norms, q, attention out) + 2·4096 (k, v) + 4·11008 (SwiGLU)
    acts = 32 * 2048 * 2 * (6 * 4096 + 2 * 4096 + 4 * 11008) + 2048 * 32000 * 6
    assert m["activations_gb"] * 1e9 == pytest.approx(acts)
    assert m["total_gb"] * 1e9 == pytest.approx(16 * n + acts)
    ckpt = memory.breakdown(n, cfg, 1, 2048, 1, "none", True)
    assert ckpt["activations_gb"] < m["activations_gb"] / 5


def test_a_chunked_loss_head_counts_one_chunk_of_logits():
    """train.loss_chunk_tokens: the head keeps ∂h (2 bytes x d a token) and ∂W (fp32) and holds
    one chunk's logits (10 bytes an entry) where it held all of them at 6 bytes an entry."""
    cfg = ModelConfig(**PRESETS["llama-1b"])  # d 2048, vocab 32000
    body = 22 * 16 * 2048 * 2 * (6 * 2048 + 2 * 256 + 4 * 5632)  # 16 x 2048 tokens, kv_dim 4·64
    whole = memory.breakdown(1.1e9, cfg, 16, 2048, 1, "none", False)["activations_gb"] * 1e9
    chunked = memory.breakdown(1.1e9, cfg, 16, 2048, 1, "none", False, loss_chunk=4096)["activations_gb"] * 1e9
    assert whole == pytest.approx(body + 32768 * 32000 * 6)  # 6.3 GB of logits
    assert chunked == pytest.approx(body + 2 * 2048 * 32768 + 4 * 32000 * 2048 + 10 * 4096 * 32000)  # 1.7 GB
    # from a recipe, as `fmforge cost estimate --recipe ... --set train.loss_chunk_tokens=N` reads it
    base = ["estimate", "--recipe", "demo", "--tokens", "1e9", "--set", "cost.gpu=h100"]
    off, on = cli_json(*base)["memory"], cli_json(*base, "--set", "train.loss_chunk_tokens=512")["memory"]
    assert off["loss_chunk_tokens"] is None and on["loss_chunk_tokens"] == 512
    tokens, d, v = 16 * 256, 192, 4096  # the demo recipe: micro-batch 16 x 256, preset tiny (d 192), vocab 4096
    drop = tokens * v * 6 - (2 * d * tokens + 4 * v * d + 10 * 512 * v)
    assert (off["schemes"]["none"]["activations_gb"] - on["schemes"]["none"]["activations_gb"]) * 1e9 == \
        pytest.approx(drop)


def test_sharding_and_min_devices_for_7b_on_80gb():
    spec = est.model_from_preset("llama-7b")
    rep = memory.memory_report(spec, hardware.get("h100"), 8)
    s = rep["schemes"]
    assert rep["sharding"] == "fsdp" and rep["per_device_gb"] == s["fsdp"]["total_gb"]
    assert s["ddp"]["total_gb"] == pytest.approx(s["none"]["total_gb"])  # DDP replicates everything
    assert s["none"]["min_devices"] is None and s["ddp"]["min_devices"] is None  # 108 GB of states > 72 GB usable
    assert s["fsdp"]["optimizer_gb"] == pytest.approx(12 * 6_738_415_616 / 8 / 1e9)
    n_min = s["fsdp"]["min_devices"]
    assert n_min == 2
    fits = memory.breakdown(spec.params, spec.cfg, 1, 2048, n_min, "fsdp", False)["total_gb"]
    assert fits <= 80 * memory.HEADROOM
    assert memory.memory_report(spec, hardware.get("h100"), 1)["sharding"] == "none"


# ---------------------------------------------------------------- inverse forms


def test_days_round_trip_recovers_the_mfu():
    forward = cli_json("estimate", "--preset", "llama-7b", "--tokens", "2T", "--gpu", "h100", "--gpus", "64", "--mfu", "0.37")
    back = cli_json("estimate", "--preset", "llama-7b", "--tokens", "2T", "--gpu", "h100", "--gpus", "64",
                    "--days", repr(forward["days"]))
    assert back["mfu"] == pytest.approx(0.37, rel=1e-9)
    assert back["usd"] == pytest.approx(forward["usd"], rel=1e-9)


def test_budget_round_trip_recovers_the_tokens():
    forward = cli_json("estimate", "--params", "13e9", "--tokens", "3e11", "--gpu", "a100", "--mfu", "0.45")
    back = cli_json("estimate", "--params", "13e9", "--gpu", "a100", "--mfu", "0.45", "--budget-usd", repr(forward["usd"]))
    assert back["tokens_affordable"] == pytest.approx(3e11, rel=1e-9)


# ---------------------------------------------------------------- measured MFU, catalog, run report


def test_from_run_uses_median_of_later_half(tmp_path):
    lines = [{"step": i, "loss": 3.0, "mfu": 0.05} for i in range(1, 6)]  # warm-up and compilation
    lines += [{"step": i, "loss": 2.0, "mfu": m} for i, m in zip(range(6, 11), (0.30, 0.31, 0.50, 0.32, 0.33))]
    (tmp_path / "train").mkdir()
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"eval": {"val_loss": 2.1}}\n{"step": 11, "mf'
    (tmp_path / "train" / "metrics.jsonl").write_text(text)
    r = cli_json("estimate", "--params", "1e9", "--tokens", "2e10", "--gpu", "h100", "--from-run", str(tmp_path))
    assert r["mfu"] == pytest.approx(0.32) and "measured" in r["mfu_source"]


def test_user_catalog_overrides_and_adds(tmp_path):
    f = tmp_path / "hw.yaml"
    f.write_text("accelerators:\n  h100-sxm: {usd_per_hour: 2.0, price_date: '2026-11'}\n"
                 "  mygpu: {bf16_tflops: 500, memory_gb: 96, usd_per_hour: 1.5, match: ['My GPU']}\n")
    cat = hardware.load_catalog(f)
    assert hardware.get("h100", cat).usd_per_hour == 2.0 and hardware.get("h100", cat).bf16_tflops == 989
    assert hardware.get("mygpu", cat).tdp_w is None
    r = cli_json("estimate", "--params", "1e9", "--tokens", "1e10", "--gpu", "mygpu", "--catalog", str(f))
    assert r["price_per_hour"] == 1.5 and r["energy_kwh"] is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("accelerators:\n  h100-sxm: {usd_per_houre: 2.0}\n")
    with pytest.raises(ValueError, match="usd_per_houre"):
        hardware.load_catalog(bad)


def test_identify_keeps_working_for_the_trainer():
    assert hardware.identify("NVIDIA H200").name == "h200"
    assert hardware.identify("NVIDIA A100-SXM4-40GB").name == "a100-40gb"
    assert hardware.identify("NVIDIA A100-SXM4-80GB").bf16_tflops == 312
    assert hardware.identify("NVIDIA H100 80GB HBM3").name == "h100-sxm"
    assert hardware.identify("Some CPU") is None


def test_run_cost_states_what_a_run_cost():
    r = run_cost(6e9, 3_600_000, 1800.0, "h100-sxm", 2, None)
    assert r["device_hours"] == 1.0 and r["usd"] == pytest.approx(3.00)
    assert r["mfu"] == pytest.approx(6e9 * 3_600_000 / (2 * 1800 * 989e12))
    assert run_cost(6e9, 1000, 10.0, "NVIDIA H200", 1, 4.5)["usd"] == pytest.approx(4.5 * 10 / 3600)
    cpu = run_cost(6e6, 1000, 10.0, None, 1, None)
    assert cpu["mfu"] is None and cpu["usd"] is None and cpu["device_hours"] == pytest.approx(10 / 3600)


# ---------------------------------------------------------------- plan and serve


def test_plan_chinchilla_and_recommendation():
    r = cli_json("plan", "--budget-usd", "50000", "--gpu", "h100", "--mfu", "0.4")
    compute = 50000 / 3.00 * 3600 * 989e12 * 0.4
    rule = r["scratch"]["rule_20_tokens_per_param"]
    assert r["compute_flops"] == pytest.approx(compute)
    assert rule["params"] == pytest.approx((compute / 120) ** 0.5) and rule["tokens_per_param"] == pytest.approx(20)
    n, d = rule["params"], rule["tokens"]
    assert rule["loss"] == pytest.approx(1.69 + 406.4 / n ** 0.34 + 410.7 / d ** 0.28)
    fit = r["scratch"]["hoffmann_fit"]
    assert 6 * fit["params"] * fit["tokens"] == pytest.approx(compute)
    # the fit's allocation is its minimum at fixed compute
    for k in (0.8, 1.25):
        assert plan.hoffmann_loss(fit["params"] * k, fit["tokens"] / k) > fit["loss"]
    assert r["finetune"]["lora"]["usd"] < r["finetune"]["full"]["usd"] < 50000
    assert r["choice"] in ("full", "lora") and "$50,000" in r["recommendation"]


def test_serve_dollars_per_million_tokens(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"hardware": "NVIDIA H100 80GB HBM3", "results": [
        {"concurrency": 1, "tokens_per_s": 100.0}, {"concurrency": 32, "generated_tokens": 72000, "seconds": 60}]}))
    r = cli_json("serve", "--from-bench", str(bench))
    assert r["usd_per_million_tokens"] == pytest.approx(3.00 / (1200 * 3600) * 1e6)
    assert r["results"][0]["usd_per_million_tokens"] == pytest.approx(3.00 / (100 * 3600) * 1e6)
    assert cli_json("serve", "--model", str(tmp_path), "--price", "1.0")["tokens_per_s"] == 1200


# ---------------------------------------------------------------- errors and isolation


@pytest.mark.parametrize("args, words", [
    (["estimate", "--params", "7e9", "--tokens", "1e12", "--gpu", "nope"], "unknown accelerator 'nope'"),
    (["estimate", "--phases", "/nonexistent/phases.yaml"], "cannot read phases file"),
    (["estimate", "--params", "seven", "--tokens", "1e12"], "--params"),
    (["estimate", "--gpu", "h100"], "need a model"),
    (["estimate", "--params", "7e9", "--tokens", "1e12", "--from-run", "/nonexistent"], "metrics.jsonl"),
    (["serve", "--from-bench", "/nonexistent.json"], "cannot read bench file"),
])
def test_bad_input_exits_2_with_one_line(args, words):
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_phases_missing_field_is_named(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("phases:\n  - {accelerator: tpu-v4, hours: 5}\n")
    res = runner.invoke(app, ["estimate", "--phases", str(f)])
    assert res.exit_code == 2 and "phases[0]: missing field 'devices'" in res.stderr
    with pytest.raises(CostError):
        est.estimate(None, None, hardware.get("h100"), 1, days=1, budget_usd=5)


def test_cost_stage_does_not_import_torch():
    code = ("import sys, fmforge.cost, fmforge.cost.commands, fmforge.cost.plan, fmforge.cost.serving; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('fmforge.train', 'fmforge.serve', 'fmforge.cli'))]; "
            "sys.exit(str(bad) if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_docs_tables_match_the_code():
    doc = (ROOT / "docs" / "cost.md").read_text(encoding="utf-8")
    assert published.markdown_table() in doc, "regenerate with: python -m fmforge.cost.published"
    assert hardware.markdown_table() in doc


# ---------------------------------------------------------------- every numeric input is checked

EST = ["estimate", "--params", "7e9", "--tokens", "1e12", "--gpu", "h100"]
PLAN = ["plan", "--budget-usd", "50000", "--gpu", "h100"]


@pytest.mark.parametrize("args, flag", [
    (EST + ["--gpus", "0"], "--gpus"),
    (EST + ["--gpus", "-3"], "--gpus"),
    (EST + ["--price", "-3"], "--price"),
    (EST + ["--price", "nan"], "--price"),
    (EST + ["--mfu", "0"], "--mfu"),
    (EST + ["--mfu", "1.5"], "--mfu"),
    (EST + ["--days", "0"], "--days"),
    (EST + ["--days", "inf"], "--days"),
    (EST + ["--budget-usd", "-5"], "--budget-usd"),
    (EST + ["--pue", "0.5"], "--pue"),
    (EST + ["--grid", "-1"], "--grid"),
    (EST + ["--seq-len", "0"], "--seq-len"),
    (EST + ["--micro-batch", "0"], "--micro-batch"),
    (EST + ["--sharding", "zero9"], "--sharding"),
    (["estimate", "--params", "7e9", "--tokens", "0", "--gpu", "h100"], "--tokens"),
    (["estimate", "--params", "0", "--tokens", "1e12", "--gpu", "h100"], "--params"),
    (["estimate", "--preset", "llama-7b", "--tokens", "1e12", "--gpu", "h100", "--seq-len", "-1"], "--seq-len"),
    (PLAN + ["--gpus", "0"], "--gpus"),
    (PLAN + ["--gpus", "-3"], "--gpus"),
    (PLAN + ["--price", "-3"], "--price"),
    (PLAN + ["--price", "0"], "--price"),
    (PLAN + ["--mfu", "2"], "--mfu"),
    (PLAN + ["--lora-rank", "0"], "--lora-rank"),
    (PLAN + ["--base-tokens", "0"], "--base-tokens"),
    (PLAN + ["--finetune-tokens", "0"], "--finetune-tokens"),
    (PLAN + ["--base-params", "0"], "--base-params"),
    (["plan", "--budget-usd", "0", "--gpu", "h100"], "--budget-usd"),
    (["plan", "--budget-usd", "nan", "--gpu", "h100"], "--budget-usd"),
], ids=lambda x: " ".join(x[:1] + x[-2:]) if isinstance(x, list) else "")
def test_impossible_numbers_are_refused_naming_the_flag(args, flag):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert flag in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize("price, utilization, devices, flag", [
    ("-1", "1", 1, "--price"), ("1", "0", 1, "--utilization"), ("1", "1.5", 1, "--utilization"),
    ("1", "1", 0, "devices"),
])
def test_serve_refuses_impossible_numbers(tmp_path, price, utilization, devices, flag):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"tokens_per_s": 100.0, "devices": devices}))
    res = runner.invoke(app, ["serve", "--from-bench", str(bench), "--price", price, "--utilization", utilization])
    assert res.exit_code == 2 and flag in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output


def test_library_functions_check_their_inputs_too():
    h100 = hardware.get("h100")
    spec = est.model_from_params(7e9)
    for kwargs, flag in [({"gpus": 0}, "--gpus"), ({"price": -3}, "--price"), ({"tokens": 0}, "--tokens"),
                         ({"tokens": -1e9}, "--tokens"), ({"mfu": 0.0}, "--mfu")]:
        args = {"model": spec, "tokens": 1e12, "acc": h100, "gpus": 8, **kwargs}
        with pytest.raises(CostError, match=flag):
            est.estimate(**args)
    with pytest.raises(CostError, match="--gpus"):
        plan.plan(5e4, h100, 0, spec, 1e12, 1e8)
    with pytest.raises(CostError, match="--gpus"):
        plan.plan(5e4, h100, -3, spec, 1e12, 1e8)
    with pytest.raises(CostError, match="--price"):
        plan.plan(5e4, h100, 8, spec, 1e12, 1e8, price=-3)
    with pytest.raises(CostError, match="--params"):
        est.model_from_params(-1)


def test_phase_devices_must_be_whole_and_positive(tmp_path):
    f = tmp_path / "p.yaml"
    for devices in ("0.5", "0", "-2"):
        f.write_text(f"phases:\n  - {{accelerator: tpu-v4, devices: {devices}, hours: 5}}\n")
        res = runner.invoke(app, ["estimate", "--phases", str(f)])
        assert res.exit_code == 2 and "phases[0].devices" in res.stderr, res.output


def test_a_bug_inside_a_cost_command_keeps_its_traceback(monkeypatch):
    # A programming error is not the user's fault: it must not become a tidy "error:" line.
    def broken(*a, **k):
        raise ValueError("a bug, not bad input")
    monkeypatch.setattr(est, "estimate", broken)
    res = runner.invoke(app, EST)
    assert res.exit_code != 2 and isinstance(res.exception, ValueError)
    assert "error:" not in res.stderr


def test_bad_catalog_is_named_and_one_line(tmp_path):
    f = tmp_path / "hw.yaml"
    f.write_text("accelerators: [1, 2")
    res = runner.invoke(app, EST + ["--catalog", str(f)])
    assert res.exit_code == 2 and str(f) in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output


def test_real_cli_gpus_0_is_one_line_exit_2():
    res = subprocess.run([sys.executable, "-m", "fmforge", "cost", "plan", "--budget-usd", "1000", "--gpus", "0"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert "--gpus" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_estimate_takes_the_shared_recipe_options(tmp_path):
    # --set works like every other verb's (fmforge.options), on the recipe's cost section
    r = cli_json("estimate", "--recipe", "demo", "--tokens", "1e9", "--set", "cost.gpus=4", "--set", "cost.gpu=h100")
    assert r["gpus"] == 4 and r["accelerator"]["name"] == "h100-sxm"


@pytest.mark.parametrize("flag", ["--phases", "--catalog", "--from-bench", "--from-run"])
def test_binary_input_files_are_named_not_a_traceback(tmp_path, flag):
    f = tmp_path / "binary.yaml"
    f.write_bytes(bytes(range(256)) * 8)
    if flag == "--from-run":
        (tmp_path / "metrics.jsonl").write_bytes(bytes(range(256)) * 8)
        args = EST + ["--from-run", str(tmp_path)]
    elif flag == "--from-bench":
        args = ["serve", "--from-bench", str(f), "--price", "1"]
    else:
        args = (["estimate", "--phases", str(f)] if flag == "--phases" else EST + ["--catalog", str(f)])
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    where = str(tmp_path / "metrics.jsonl") if flag == "--from-run" else str(f)
    assert where in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_the_tiny_preset_is_estimated_with_the_tokenizers_default_vocabulary():
    """`tiny` has no vocab_size of its own (a recipe takes the tokenizer's): --preset tiny
    was a traceback. The demo's 2.6M parameters: 4096 x 192 tied embedding, 4 blocks of
    attention 4·192² + MLP 3·192·512 + norms 2·192 + QK-norm 2·64, and the final norm."""
    blocks = 4 * (4 * 192 * 192 + 3 * 192 * 512 + 2 * 192 + 2 * 64)
    r = cli_json("estimate", "--preset", "tiny", "--tokens", "1e9")
    assert r["model"]["params"] == 4096 * 192 + blocks + 192 == 2_558_144
    plan = runner.invoke(app, ["plan", "--budget-usd", "100", "--base-preset", "tiny", "--json"])
    assert plan.exit_code == 0, plan.output
