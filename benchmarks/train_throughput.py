"""Training throughput on one GPU: fmforge vs nanoGPT vs HF Llama, same run, same batch.

Each case runs in its own process (fresh CUDA context and compile caches): build the
model and its optimizer, take `--warmup` steps (compilation), then time `--steps` full
optimizer steps on random tokens (bf16 autocast, gradient clipping at 1.0, loss read back
every step as a real trainer does). fmforge steps with its trainer's own step
(fmforge.train.step.TrainStep); the peers with a loop written here (fused AdamW). MFU uses one formula for every system, PaLM's 6·N + 12·L·d·T
against 989 TFLOP/s (H100/H200 dense bf16), N = the weights that take part in matmuls.

    python benchmarks/train_throughput.py --nanogpt PATH_TO_NANOGPT --out results.json
    python benchmarks/train_throughput.py --cases fmforge/gpt2-124m --steps 5   # one case
    python benchmarks/train_throughput.py --device cpu --tiny --cases fmforge/llama-1b,fmforge/llama-1b/chunked
        # a CPU check of fmforge cases: 2 layers of width 128 (the case's vocabulary kept), 4×256 tokens,
        # compile off; peak memory is then the worker's peak RSS

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
    # exploratory (train.loss_chunk_tokens): the head and loss a chunk of tokens at a time, the
    # gradients taken in the forward; what it costs in speed and saves in peak memory
    "fmforge/llama-1b/chunked": ("fmforge", "llama-1b", 8, 2048, {"loss_chunk_tokens": 4096}),
    "fmforge/llama-1b/chunked-1k": ("fmforge", "llama-1b", 8, 2048, {"loss_chunk_tokens": 1024}),
    "fmforge/llama-1b/b16/chunked": ("fmforge", "llama-1b", 16, 2048, {"loss_chunk_tokens": 4096}),
    "fmforge/h200-60s/chunked": ("fmforge", "recipes/h200-60s.yaml", 32, 1024, {"loss_chunk_tokens": 4096}),
}
DEFAULT = ["fmforge/gpt2-124m", "nanogpt/gpt2-124m", "fmforge/llama-1b", "hf/llama-1b"]


# --tiny: the width and depth of a CPU check; the vocabulary (the head's share) stays the case's
TINY = dict(d_model=128, n_layers=2, n_heads=2, n_kv_heads=None, ffn_dim=None, context_length=256)
TINY_BATCH = 4


def build_fmforge(model_name: str, opts: dict, device: str = "cuda", tiny: bool = False):
    import torch

    from fmforge.config import ModelConfig, TrainConfig
    from fmforge.model.flops import flops_per_token
    from fmforge.model.presets import PRESETS
    from fmforge.model.transformer import Transformer
    from fmforge.train.optim import build_optimizer
    from fmforge.train.parallelize import parallelize, setup

    own = "compile" in opts  # compiled here (whole model, or blocks with a mode) instead of by parallelize
    compile_ = "off" if own or device == "cpu" else "on"  # on a CPU a check, not a measurement of Inductor
    chunk = opts.get("loss_chunk_tokens")
    if model_name.endswith(".yaml"):  # a recipe's model and optimizer (its tokenizer's vocabulary)
        from fmforge.config import load_recipe

        recipe = load_recipe(ROOT / model_name)
        cfg = recipe.model.model_copy(update={"vocab_size": recipe.model.vocab_size or recipe.tokenizer.vocab_size})
        tcfg = recipe.train.model_copy(update={"compile": compile_, "device": device, "loss_chunk_tokens": chunk})
    else:
        cfg = ModelConfig(**PRESETS[model_name])
        tcfg = TrainConfig(max_steps=1, attention=opts.get("attention", "auto"), compile=compile_, device=device,
                           loss_chunk_tokens=chunk)
    if tiny:
        cfg = cfg.model_copy(update=TINY)
    rt = setup(tcfg)
    with torch.device(rt.device):
        model = Transformer(cfg)
    model = parallelize(model, rt, loss_chunk_tokens=tcfg.loss_chunk_tokens)
    mode = opts.get("mode")
    if opts.get("compile") == "model":
        model = torch.compile(model, mode=mode)
    elif opts.get("compile") == "blocks":
        for block in model.layers:
            block.compile(mode=mode)
        model.loss_head = torch.compile(model.loss_head, mode=mode)
    opt = build_optimizer(model, tcfg, rt.device.type)
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


def build_case(name: str, nanogpt: str | None, device: str = "cuda", tiny: bool = False):
    """(step function, flops per token) of a case: step(i) runs one full optimizer step on
    batch i of 4 fixed random batches and returns the loss, read back as a trainer does."""
    import torch

    system, model_name, batch, seq, opts = case_shape(name, tiny)
    torch.manual_seed(0)
    own_step = None  # fmforge: its trainer's step; the peers: the loop below
    if system != "fmforge" and (device != "cuda" or tiny):
        raise SystemExit(f"{name}: the peers run on CUDA at full size only (--device cuda, no --tiny)")
    if system == "fmforge":
        model, opt, own_step, fpt, vocab = build_fmforge(model_name, opts, device, tiny)
    elif system == "nanogpt":
        model, opt, loss_fn, fpt, vocab = build_nanogpt(nanogpt)
    else:
        model, opt, loss_fn, fpt, vocab = build_hf(model_name)
    gen = torch.Generator(device=device).manual_seed(0)
    data = [torch.randint(0, vocab, (batch, seq + 1), device=device, generator=gen) for _ in range(4)]

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


def case_shape(name: str, tiny: bool) -> tuple:
    system, model_name, batch, seq, opts = CASES[name]
    return (system, model_name, TINY_BATCH, TINY["context_length"], opts) if tiny else CASES[name]


def run_case(name: str, steps: int, warmup: int, nanogpt: str | None, device: str = "cuda",
             tiny: bool = False) -> dict:
    import resource

    import torch

    system, model_name, batch, seq, opts = case_shape(name, tiny)
    step, fpt = build_case(name, nanogpt, device, tiny)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    sync()
    warm_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [step(i) for i in range(steps)]
    sync()
    dt = time.perf_counter() - t0
    tps = batch * seq * steps / dt
    # on a CPU the worker's peak RSS (the model, the optimizer, the step's tensors and torch itself)
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    return {"case": name, "system": system, "model": model_name + ("/tiny" if tiny else ""), "batch": batch,
            "seq": seq, **opts, "device": device, "tokens_per_s": tps, "mfu": tps * fpt / PEAK if cuda else None,
            "flops_per_token": fpt, "peak_mem_gb": peak,
            "peak_mem_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
            "step_ms": dt / steps * 1e3, "warmup_s": warm_s, "final_loss": losses[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(DEFAULT), help=f"comma-separated, from: {', '.join(CASES)}")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--nanogpt", default=None, help="folder with nanoGPT's model.py")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/train_throughput-DATE.json)")
    ap.add_argument("--case-timeout", type=int, default=240)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu (fmforge cases only)")
    ap.add_argument("--tiny", action="store_true", help="fmforge cases at 2 layers of width 128, 4x256 tokens "
                    "(a CPU check)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(run_case(a.worker, a.steps, a.warmup, a.nanogpt, a.device, a.tiny)), flush=True)
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
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(a.steps), "--warmup", str(a.warmup),
               "--device", a.device] + (["--tiny"] if a.tiny else [])
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
        mfu = f"{r['mfu']:6.1%}" if r["mfu"] is not None else "   n/a"
        print(f"{name:28s} {r['tokens_per_s']:>10,.0f} tok/s  MFU {mfu}  "
              f"peak {r['peak_mem_gb']:5.1f} GB  step {r['step_ms']:.0f} ms  warmup {r['warmup_s']:.0f}s", flush=True)
    print(f"wrote {write()}")


if __name__ == "__main__":
    main()
