"""Training throughput on one GPU: fmforge vs nanoGPT vs HF Llama, same run, same batch.

Each case runs in its own process (fresh CUDA context and compile caches): build the
model and its optimizer, take `--warmup` steps (compilation), then time `--steps` full
optimizer steps on random tokens (bf16 autocast, gradient clipping at 1.0, loss read back
every step as a real trainer does). fmforge steps with its trainer's own step
(fmforge.train.step.TrainStep); the peers with a loop written here (fused AdamW). MFU uses one formula for every system, PaLM's 6·N + 12·L·d·T
against 989 TFLOP/s (H100/H200 dense bf16), N = the weights that take part in matmuls.

    python benchmarks/train_throughput.py --nanogpt PATH_TO_NANOGPT --out results.json
    python benchmarks/train_throughput.py --cases fmforge/gpt2-124m --steps 5   # one case

nanoGPT is fetched, never committed: PATH_TO_NANOGPT is a folder holding its model.py.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)
PEAK = 989e12

# case name -> (system, model, batch, seq, options)
CASES = {
    "fmforge/gpt2-124m": ("fmforge", "gpt2-124m", 32, 1024, {}),
    "fmforge/gpt2-124m/b64": ("fmforge", "gpt2-124m", 64, 1024, {}),
    "fmforge/gpt2-124m/flash": ("fmforge", "gpt2-124m", 32, 1024, {"attention": "flash"}),
    "fmforge/gpt2-124m/whole": ("fmforge", "gpt2-124m", 32, 1024, {"compile": "model"}),
    # exploratory (issue 14): Inductor's GEMM autotuning per block; the whole model under CUDA graphs
    "fmforge/gpt2-124m/autotune": ("fmforge", "gpt2-124m", 32, 1024, {"compile": "blocks",
                                                                      "mode": "max-autotune-no-cudagraphs"}),
    "fmforge/gpt2-124m/graphs": ("fmforge", "gpt2-124m", 32, 1024, {"compile": "model", "mode": "reduce-overhead"}),
    "nanogpt/gpt2-124m": ("nanogpt", "gpt2-124m", 32, 1024, {}),
    # the time-to-quality recipe's step (42M, Muon, 32k vocabulary), to see where its time goes
    "fmforge/h200-60s": ("fmforge", "recipes/h200-60s.yaml", 32, 1024, {}),
    "fmforge/h200-60s/b16": ("fmforge", "recipes/h200-60s.yaml", 16, 1024, {}),
    "fmforge/h200-60s/whole": ("fmforge", "recipes/h200-60s.yaml", 32, 1024, {"compile": "model"}),
    "fmforge/h200-60s/graphs": ("fmforge", "recipes/h200-60s.yaml", 32, 1024, {"compile": "model",
                                                                              "mode": "reduce-overhead"}),
    "fmforge/llama-1b": ("fmforge", "llama-1b", 8, 2048, {}),
    "fmforge/llama-1b/b16": ("fmforge", "llama-1b", 16, 2048, {}),
    "fmforge/llama-1b/flash": ("fmforge", "llama-1b", 8, 2048, {"attention": "flash"}),
    "fmforge/llama-1b/whole": ("fmforge", "llama-1b", 8, 2048, {"compile": "model"}),
    "fmforge/llama-1b/autotune": ("fmforge", "llama-1b", 8, 2048, {"compile": "blocks",
                                                                  "mode": "max-autotune-no-cudagraphs"}),
    "hf/llama-1b": ("hf", "llama-1b", 8, 2048, {}),
}
DEFAULT = ["fmforge/gpt2-124m", "nanogpt/gpt2-124m", "fmforge/llama-1b", "hf/llama-1b"]


def build_fmforge(model_name: str, opts: dict):
    import torch

    from fmforge.config import ModelConfig, TrainConfig
    from fmforge.model.flops import flops_per_token
    from fmforge.model.presets import PRESETS
    from fmforge.model.transformer import Transformer
    from fmforge.train.optim import build_optimizer
    from fmforge.train.parallelize import parallelize, setup

    own = "compile" in opts  # compiled here (whole model, or blocks with a mode) instead of by parallelize
    if model_name.endswith(".yaml"):  # a recipe's model and optimizer (its tokenizer's vocabulary)
        from fmforge.config import load_recipe

        recipe = load_recipe(ROOT / model_name)
        cfg = recipe.model.model_copy(update={"vocab_size": recipe.model.vocab_size or recipe.tokenizer.vocab_size})
        tcfg = recipe.train.model_copy(update={"compile": "off" if own else "on"})
    else:
        cfg = ModelConfig(**PRESETS[model_name])
        tcfg = TrainConfig(max_steps=1, attention=opts.get("attention", "auto"), compile="off" if own else "on")
    rt = setup(tcfg)
    with torch.device(rt.device):
        model = Transformer(cfg)
    model = parallelize(model, rt)
    mode = opts.get("mode")
    if opts.get("compile") == "model":
        model = torch.compile(model, mode=mode)
    elif opts.get("compile") == "blocks":
        for block in model.layers:
            block.compile(mode=mode)
        model.loss_head = torch.compile(model.loss_head, mode=mode)
    opt = build_optimizer(model, tcfg, "cuda")
    # the trainer's own step (clip, finite check, optimizer), not a loop written here
    from fmforge.train.step import TrainStep

    train_step = TrainStep(model, opt, rt, 1, 1.0)

    def step_fn(x, y) -> float:
        return train_step(lambda: (x, y)).loss

    return model, opt, step_fn, flops_per_token(cfg, cfg.context_length), cfg.vocab_size


def build_nanogpt(path: str):
    import torch

    sys.path.insert(0, path)
    from model import GPT, GPTConfig  # nanoGPT's own model.py

    cfg = GPTConfig(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=False)
    model = GPT(cfg).cuda()
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cuda")
    model = torch.compile(model)
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()

    def loss_fn(x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(x, y)[1]

    return model, opt, loss_fn, 6 * n + 12 * 12 * 768 * 1024, 50304


def build_hf(model_name: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fmforge.model.presets import PRESETS

    p = PRESETS[model_name]
    cfg = LlamaConfig(hidden_size=p["d_model"], intermediate_size=p["ffn_dim"], num_hidden_layers=p["n_layers"],
                      num_attention_heads=p["n_heads"], num_key_value_heads=p.get("n_kv_heads") or p["n_heads"],
                      vocab_size=p["vocab_size"], max_position_embeddings=p["context_length"],
                      tie_word_embeddings=p["tie_embeddings"], attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    model = torch.compile(model)
    n = sum(p.numel() for p in model.parameters()) - model.model.embed_tokens.weight.numel()
    if cfg.tie_word_embeddings:
        n += model.model.embed_tokens.weight.numel()

    def loss_fn(x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(input_ids=x, labels=x).loss

    return model, opt, loss_fn, 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * p["context_length"], cfg.vocab_size


def build_case(name: str, nanogpt: str | None):
    """(step function, flops per token) of a case: step(i) runs one full optimizer step on
    batch i of 4 fixed random batches and returns the loss, read back as a trainer does."""
    import torch

    system, model_name, batch, seq, opts = CASES[name]
    torch.manual_seed(0)
    own_step = None  # fmforge: its trainer's step; the peers: the loop below
    if system == "fmforge":
        model, opt, own_step, fpt, vocab = build_fmforge(model_name, opts)
    elif system == "nanogpt":
        model, opt, loss_fn, fpt, vocab = build_nanogpt(nanogpt)
    else:
        model, opt, loss_fn, fpt, vocab = build_hf(model_name)
    gen = torch.Generator(device="cuda").manual_seed(0)
    data = [torch.randint(0, vocab, (batch, seq + 1), device="cuda", generator=gen) for _ in range(4)]

    def step(i: int) -> float:
        d = data[i % len(data)]
        if own_step is not None:
            return own_step(d[:, :-1].contiguous(), d[:, 1:].contiguous())
        loss = loss_fn(d[:, :-1].contiguous(), d[:, 1:].contiguous())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)  # a trainer reads the loss every step

    return step, fpt


def run_case(name: str, steps: int, warmup: int, nanogpt: str | None) -> dict:
    import torch

    system, model_name, batch, seq, opts = CASES[name]
    step, fpt = build_case(name, nanogpt)

    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [step(i) for i in range(steps)]
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tps = batch * seq * steps / dt
    return {"case": name, "system": system, "model": model_name, "batch": batch, "seq": seq, **opts,
            "tokens_per_s": tps, "mfu": tps * fpt / PEAK, "flops_per_token": fpt,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9, "step_ms": dt / steps * 1e3,
            "warmup_s": warm_s, "final_loss": losses[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(DEFAULT), help=f"comma-separated, from: {', '.join(CASES)}")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--nanogpt", default=None, help="folder with nanoGPT's model.py")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/train_throughput-DATE.json)")
    ap.add_argument("--case-timeout", type=int, default=240)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(run_case(a.worker, a.steps, a.warmup, a.nanogpt)), flush=True)
        return
    import torch  # noqa: F401  (record.write_result reads the GPU through it)

    results = []

    header = provenance(a)

    def write() -> Path:  # after every case, so a crash later keeps what was measured
        nonlocal out_path
        figures = {"peak_tflops": PEAK / 1e12, "formula": "MFU = tokens/s * (6N + 12*L*d*T) / 989e12",
                   "results": results}
        out_path = write_result("train_throughput", header, figures, out_path or a.out)
        return out_path

    out_path = None

    for name in a.cases.split(","):
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(a.steps), "--warmup", str(a.warmup)]
        if a.nanogpt:
            cmd += ["--nanogpt", a.nanogpt]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.case_timeout)
        except subprocess.TimeoutExpired:
            print(f"{name}: timed out after {a.case_timeout}s", flush=True)
            results.append({"case": name, "error": "timeout"})
            continue
        lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if p.returncode or not lines:
            print(f"{name}: FAILED\n{p.stderr[-3000:]}", flush=True)
            results.append({"case": name, "error": p.stderr[-1500:]})
            continue
        r = json.loads(lines[0][7:])
        results.append(r)
        write()
        print(f"{name:28s} {r['tokens_per_s']:>10,.0f} tok/s  MFU {r['mfu']:6.1%}  "
              f"peak {r['peak_mem_gb']:5.1f} GB  step {r['step_ms']:.0f} ms  warmup {r['warmup_s']:.0f}s", flush=True)
    print(f"wrote {write()}")


if __name__ == "__main__":
    main()
