"""Serving throughput: fmforge's engine (continuous-batching scheduler) vs HF transformers
`generate` (static batch), same weights, prompts, precision and batch, in one run.

Model: the `llama-1b` preset shape (TinyLlama's: 22 layers, d 2048, GQA 32/4 heads),
random weights (seeded) in bf16; HF gets the same tensors through fmforge's HF export
mapping (fmforge.export.hf). Prompts: random token ids, `--prompt-len` tokens; each request
generates exactly `--new-tokens` tokens greedily (no end-of-text token: the model is random).

At concurrency c, c requests are submitted together, `--rounds` times; throughput is all
generated tokens over the wall time, latency is each request's submit-to-last-token time
(p50/p99). For HF one `generate` call on the batch of c is one round (every request in it
finishes when the call does). fmforge variants: `eager` (no CUDA graphs), `graphs` (decode
steps in CUDA graphs), `compile` (torch.compile'd layer pieces inside the graphs), `compile-step` (the whole
decode step compiled as one graph, inside the CUDA graphs).

    python3 benchmarks/serve_throughput.py --out DIR            # CUDA: the full run
    python3 benchmarks/serve_throughput.py --device cpu --tiny --out DIR

Writes DIR/serve_throughput.json (benchmarks/record.py's writer) and DIR/bench.json, the
fmforge rows in the form `fmforge cost serve --from-bench DIR/bench.json` prices.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs) + 0.5) - 1))]  # nearest rank


def build_model(a):
    import torch

    from fmforge.config import ModelConfig
    from fmforge.model.presets import PRESETS
    from fmforge.model.transformer import Transformer

    if a.tiny:
        cfg = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, context_length=128,
                          tie_embeddings=False, init_std=0.2)
    else:
        cfg = ModelConfig(**PRESETS["llama-1b"])
    torch.manual_seed(0)
    with torch.device(a.device):
        model = Transformer(cfg)
    return model.to(getattr(torch, a.dtype)).eval()


def run_fmforge(model, prompts_by_c, a, variant: str) -> list[dict]:
    import torch

    from fmforge.serve.engine import Engine
    from fmforge.serve.sampling import SamplingParams
    from fmforge.serve.scheduler import Scheduler, Sequence

    eng = Engine(model, max(prompts_by_c), a.prompt_len + a.new_tokens, graphs=variant != "eager",
                 compile={"compile": "pieces", "compile-step": "step"}.get(variant, False))
    t0 = time.perf_counter()
    eng.warmup(None, [a.prompt_len + a.new_tokens])  # every batch bucket's graph (and compile), in this thread
    print(f"{variant:>8} warm-up {time.perf_counter() - t0:.1f}s", flush=True)
    sched = Scheduler(eng, max_queue=10 * max(prompts_by_c))
    rows = []
    try:
        for c, prompts in prompts_by_c.items():
            def round_(ps):
                seqs = [Sequence(list(p), SamplingParams(max_tokens=a.new_tokens, temperature=0)) for p in ps]
                sched.submit(seqs)
                for s in seqs:
                    s.done.wait()
                bad = [s.error for s in seqs if s.finish_reason != "length" or len(s.out) != a.new_tokens]
                if bad:
                    raise RuntimeError(f"{variant} c={c}: a request did not generate {a.new_tokens} tokens: {bad[0]}")
                return seqs

            t0 = time.perf_counter()
            first = round_(prompts)  # warm-up: captures (and compiles) this batch's shapes
            warm = time.perf_counter() - t0
            lat, ttft, toks = [], [], 0
            if a.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(a.rounds):
                for s in round_(prompts):
                    lat.append(s.t_done - s.t_submit)
                    ttft.append(s.t_first - s.t_submit)
                    toks += len(s.out)
            wall = time.perf_counter() - t0
            rows.append({"system": f"fmforge-{variant}", "concurrency": c, "requests": len(lat),
                         "output_tokens": toks, "wall_s": round(wall, 4),
                         "output_tokens_per_s": round(toks / wall, 1),
                         "latency_p50_s": round(pct(lat, 50), 4), "latency_p99_s": round(pct(lat, 99), 4),
                         "ttft_p50_s": round(pct(ttft, 50), 4), "ttft_p99_s": round(pct(ttft, 99), 4),
                         "warmup_s": round(warm, 2), "tokens": [s.out for s in first]})
            print(f"{variant:>8} c={c:<4} {toks / wall:10.1f} tok/s  p50 {pct(lat, 50):.3f}s  p99 {pct(lat, 99):.3f}s"
                  f"  (warm-up {warm:.1f}s)", flush=True)
    finally:
        sched.close()
        del eng
    return rows


def run_hf(model, prompts_by_c, a) -> list[dict]:
    import torch
    import transformers

    from fmforge.export.hf import hf_config, to_hf_state

    cfg = model.cfg
    d = hf_config(cfg, None, None)
    hcfg = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device(a.device):
        hf = transformers.AutoModelForCausalLM.from_config(hcfg, attn_implementation="sdpa")
    missing, unexpected = hf.load_state_dict(to_hf_state(model.state_dict(), cfg), strict=False)
    if unexpected or [k for k in missing if not k.endswith("inv_freq")]:
        raise RuntimeError(f"HF model does not take fmforge's weights: missing {missing}, unexpected {unexpected}")
    hf = hf.to(getattr(torch, a.dtype)).eval()
    gen = dict(do_sample=False, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, eos_token_id=None,
               pad_token_id=0, temperature=None, top_p=None, top_k=None)
    rows = []
    for c, prompts in prompts_by_c.items():
        ids = torch.tensor(prompts, device=a.device)
        mask = torch.ones_like(ids)
        with torch.no_grad():
            t0 = time.perf_counter()
            out = hf.generate(ids, attention_mask=mask, **{**gen, "max_new_tokens": 4, "min_new_tokens": 4})
            warm = time.perf_counter() - t0
            lat = []
            for _ in range(a.hf_rounds):
                if a.device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = hf.generate(ids, attention_mask=mask, **gen)
                if a.device == "cuda":
                    torch.cuda.synchronize()
                lat += [time.perf_counter() - t0] * c
        toks = c * a.new_tokens * a.hf_rounds
        wall = sum(lat) / c
        rows.append({"system": "hf-generate", "concurrency": c, "requests": len(lat), "output_tokens": toks,
                     "wall_s": round(wall, 4), "output_tokens_per_s": round(toks / wall, 1),
                     "latency_p50_s": round(pct(lat, 50), 4), "latency_p99_s": round(pct(lat, 99), 4),
                     "warmup_s": round(warm, 2), "tokens": out[:, ids.shape[1]:].tolist()})
        print(f"{'hf':>8} c={c:<4} {toks / wall:10.1f} tok/s  p50 {pct(lat, 50):.3f}s", flush=True)
    return rows


def agreement(a_tokens: list[list[int]], b_tokens: list[list[int]]) -> float:
    """Mean share of each request's tokens that agree before the first difference."""
    def prefix(x, y):
        n = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
        return n / max(len(x), 1)
    return round(statistics.mean(prefix(x, y) for x, y in zip(a_tokens, b_tokens)), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--tiny", action="store_true", help="a tiny model and short requests (CPU check)")
    ap.add_argument("--concurrency", default=None, help="comma-separated (default 1,8,32,128; tiny: 1,4)")
    ap.add_argument("--prompt-len", type=int, default=None, help="default 128 (tiny: 16)")
    ap.add_argument("--new-tokens", type=int, default=None, help="default 128 (tiny: 16)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per concurrency (fmforge)")
    ap.add_argument("--hf-rounds", type=int, default=1, help="timed generate calls per concurrency (HF)")
    ap.add_argument("--variants", default=None, help="fmforge variants: eager,graphs,compile,compile-step (default: "
                                                     "CUDA compile-step,compile,graphs,eager; CPU eager)")
    ap.add_argument("--no-hf", action="store_true", help="skip HF generate")
    ap.add_argument("--dtype", default=None, help="bfloat16 (default on CUDA) or float32 (default on CPU)")
    ap.add_argument("--out", default=None, help="folder for serve_throughput.json and bench.json "
                                               "(default benchmarks/results, bench.json beside the result)")
    a = ap.parse_args()
    import torch

    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    a.dtype = a.dtype or ("bfloat16" if a.device == "cuda" else "float32")
    a.concurrency = a.concurrency or ("1,4" if a.tiny else "1,8,32,128")
    a.prompt_len = a.prompt_len or (16 if a.tiny else 128)
    a.new_tokens = a.new_tokens or (16 if a.tiny else 128)
    a.variants = a.variants or ("compile-step,compile,graphs,eager" if a.device == "cuda" else "eager")
    if a.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    header = provenance(a, peers=("transformers",))
    model = build_model(a)
    g = torch.Generator().manual_seed(1)
    cs = [int(c) for c in a.concurrency.split(",")]
    prompts_by_c = {c: torch.randint(0, model.cfg.vocab_size, (c, a.prompt_len), generator=g).tolist() for c in cs}
    rows, errors = [], {}
    hw = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    setting = {"model": "tiny" if a.tiny else "llama-1b", "params": sum(p.numel() for p in model.parameters()),
               "dtype": a.dtype, "weights": "random (seed 0)", "prompt_tokens": a.prompt_len,
               "new_tokens": a.new_tokens, "decoding": "greedy", "device": hw}
    out = Path(a.out) if a.out else None
    paths = {}

    def save() -> None:
        """Both files, rewritten after each system: a run cut short keeps what it measured."""
        by = {(r["system"], r["concurrency"]): r for r in rows}
        done = []
        for r in rows:  # greedy tokens of each system against HF's (bf16 sums may differ late)
            ref = by.get(("hf-generate", r["concurrency"]))
            r = {k: v for k, v in r.items() if k != "tokens"}
            if ref is not None and r["system"] != "hf-generate":
                r["greedy_agreement_with_hf"] = agreement(by[(r["system"], r["concurrency"])]["tokens"], ref["tokens"])
            done.append(r)
        target = paths.get("result") or (out / "serve_throughput.json" if out else None)
        paths["result"] = write_result("serve_throughput", header,
                                       {"setting": setting, "results": done, "errors": errors}, target)
        bench = {"benchmark": "serve_throughput", "date": header["date"], "commit": header["commit"], **setting,
                 "hardware": hw, "devices": 1, "source": paths["result"].name,
                 "results": [{k: r[k] for k in ("system", "concurrency", "output_tokens_per_s", "latency_p50_s",
                                                "latency_p99_s")} for r in done if r["system"].startswith("fmforge")]}
        paths["bench"] = (out or paths["result"].parent) / \
            ("bench.json" if out else f"{paths['result'].stem}.bench.json")
        tmp = paths["bench"].with_name(f".{paths['bench'].name}.tmp")
        tmp.write_text(json.dumps(bench, indent=2) + "\n")
        os.replace(tmp, paths["bench"])

    for v in a.variants.split(","):
        try:
            rows += run_fmforge(model, prompts_by_c, a, v)
        except Exception as e:  # one variant failing (e.g. graph capture) still leaves the others' figures
            errors[f"fmforge-{v}"] = f"{type(e).__name__}: {e}"
            print(f"fmforge-{v} failed: {errors[f'fmforge-{v}']}", flush=True)
        if a.device == "cuda":
            torch.cuda.empty_cache()
        save()
    if not a.no_hf:
        try:
            rows += run_hf(model, prompts_by_c, a)
        except Exception as e:
            errors["hf-generate"] = f"{type(e).__name__}: {e}"
            print(f"hf failed: {errors['hf-generate']}", flush=True)
        save()
    print(f"wrote {paths['result']} and {paths['bench']}")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
