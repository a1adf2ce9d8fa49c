"""Fine-tuning throughput and memory on one GPU: fmforge LoRA vs fmforge full fine-tuning vs
the same LoRA through HF `Trainer` + PEFT (what a user would pick instead), same model,
same batch, same data; with `fmforge cost plan`'s memory figures for full vs LoRA beside
the measured peaks.

Each case runs in its own process (a fresh CUDA context, so peaks are the case's own): a
random-initialised `llama-1b` preset as a transformers LlamaForCausalLM (what fmforge
finetune trains, whatever the base), synthetic instruction rows of `--seq` tokens whose
first half is prompt (masked) and second half completion, `--warmup` untimed steps, then
`--steps` timed optimizer steps. tokens/s counts every token through the model. Peak memory
is torch.cuda.max_memory_allocated over the training steps (weights included).

Precision as `fmforge finetune` runs it and as the HF recipe does: bf16 autocast; LoRA keeps
the frozen base in bf16 and adapters in fp32; full fine-tuning keeps fp32 weights + AdamW.

    python3 benchmarks/finetune_throughput.py --out benchmarks/results        # on a CUDA machine
    python3 benchmarks/finetune_throughput.py --device cpu --tiny --out /tmp  # a tiny CPU check

Needs torch, transformers, peft and accelerate (HF Trainer). Where the machine lacks peft or
accelerate, --wheels DIR takes them from wheels in DIR (unpacked, put last on sys.path):
    pip download --no-deps -d .carry/wheels peft accelerate
    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .carry/wheels psutil
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
sys.path.insert(0, str(ROOT / "benchmarks"))
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

CASES = ("fmforge-lora", "fmforge-full", "hf-trainer-lora")
TINY = dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, context_length=64,
            tie_embeddings=False)


def _wheels(folder: str | None) -> None:
    """Unpack the wheels in `folder` (once) and put them last on sys.path: what the machine
    has installed wins; what it lacks comes from the wheels."""
    import tempfile
    import zipfile

    for whl in sorted(Path(folder).glob("*.whl")) if folder else []:
        dest = Path(tempfile.gettempdir()) / "fmforge-wheels" / whl.stem
        if not dest.is_dir():
            tmp = dest.with_name(dest.name + ".tmp")
            zipfile.ZipFile(whl).extractall(tmp)
            tmp.replace(dest)
        sys.path.append(str(dest))


def model_config(a):
    from fmforge.config import ModelConfig
    from fmforge.model.presets import PRESETS

    shape = TINY if a.tiny else PRESETS[a.preset]
    return ModelConfig(**{**shape, "context_length": a.seq})


def build_model(a):
    """A random-initialised HF Llama of the preset's shape (fmforge's export config), fp32."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from fmforge.export.hf import hf_config

    cfg = model_config(a)
    hc = hf_config(cfg, 0, 1)
    arch = hc.pop("model_type")
    conf = AutoConfig.for_model(arch, **{k: v for k, v in hc.items() if k not in ("architectures", "torch_dtype")})
    conf.use_cache = False
    torch.manual_seed(0)
    with torch.device(a.device):
        model = AutoModelForCausalLM.from_config(conf, attn_implementation="sdpa")
    return model.float(), cfg


def examples(a, vocab: int, n: int):
    """Rows of seq tokens, the first half prompt (masked), the second half trained on."""
    import random

    from fmforge.finetune.data import IGNORE, Example

    rng = random.Random(0)
    half = a.seq // 2
    out = []
    for _ in range(n):
        ids = [rng.randrange(2, vocab) for _ in range(a.seq)]
        out.append(Example(ids, [IGNORE] * half + ids[half:]))
    return out


def finetune_config(a, method: str):
    from fmforge.config import FinetuneConfig

    return FinetuneConfig(method=method, micro_batch=a.micro_batch, max_steps=a.warmup + a.steps, warmup_steps=2,
                          device=a.device, lr=2e-4 if method == "lora" else 2e-5, lora={"r": a.rank, "alpha": 2 * a.rank})


def run_fmforge(a, method: str) -> dict:
    from fmforge.finetune.loop import runtime, train_loop
    from fmforge.finetune.model import parameter_counts
    from fmforge.finetune.run import prepare_model

    model, cfg = build_model(a)
    fcfg = finetune_config(a, method)
    rt = runtime(fcfg)
    net = prepare_model(model, fcfg, rt)
    counts = parameter_counts(net)
    rows = examples(a, cfg.vocab_size, a.micro_batch * (a.warmup + a.steps))
    res = train_loop(net, rows, fcfg, rt, pad_id=0, verbose=False, label=method)
    secs, toks = sum(res.step_seconds[a.warmup:]), sum(res.step_tokens[a.warmup:])
    return {**counts, "tokens_per_s": toks / secs, "step_ms": secs / a.steps * 1e3, "peak_memory_gb": _peak(a),
            "peak_reserved_gb": _reserved(a), "final_loss": res.final_loss, "warmup_s": sum(res.step_seconds[:a.warmup])}


def run_hf_trainer(a) -> dict:
    import tempfile

    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from fmforge.finetune.model import LORA_TARGETS, parameter_counts

    model, cfg = build_model(a)
    cuda = a.device.startswith("cuda")
    if cuda:
        model.to(torch.bfloat16)  # the frozen base in bf16, as QLoRA-free PEFT recipes load it
    net = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=a.rank, lora_alpha=2 * a.rank,
                                           lora_dropout=0.05, target_modules=LORA_TARGETS["llama"]))
    counts = parameter_counts(net)
    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
            for e in examples(a, cfg.vocab_size, a.micro_batch * (a.warmup + a.steps))]

    def collate(batch):
        return {k: torch.tensor([b[k] for b in batch]) for k in batch[0]}

    times: list[float] = []

    class Clock(TrainerCallback):
        """Step time from one step's end to the next (data loading and logging included, as
        fmforge's loop times collation and the loss read-back); the first from its start."""

        def on_step_begin(self, args, state, control, **kw):
            if not times:
                self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - self.last)
            self.last = now

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=a.micro_batch,
                                 max_steps=a.warmup + a.steps, learning_rate=2e-4, warmup_steps=2,
                                 lr_scheduler_type="cosine", weight_decay=0.0, max_grad_norm=1.0, bf16=cuda,
                                 optim="adamw_torch_fused" if cuda else "adamw_torch", logging_steps=1,
                                 save_strategy="no", report_to="none", remove_unused_columns=False,
                                 dataloader_num_workers=0, use_cpu=not cuda, seed=0, disable_tqdm=True)
        trainer = Trainer(model=net, args=args, train_dataset=rows, data_collator=collate, callbacks=[Clock()])
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        out = trainer.train()
    secs = sum(times[a.warmup:])
    return {**counts, "tokens_per_s": a.micro_batch * a.seq * a.steps / secs, "step_ms": secs / a.steps * 1e3,
            "peak_memory_gb": _peak(a), "peak_reserved_gb": _reserved(a), "final_loss": out.training_loss,
            "warmup_s": sum(times[:a.warmup])}


def _peak(a) -> float | None:
    import torch
    return torch.cuda.max_memory_allocated() / 1e9 if a.device.startswith("cuda") else None


def _reserved(a) -> float | None:
    import torch
    return torch.cuda.max_memory_reserved() / 1e9 if a.device.startswith("cuda") else None


def cost_plan_memory(a) -> dict:
    """`fmforge cost plan`'s per-device memory for fine-tuning this model at this batch, full
    vs LoRA (fmforge.cost.plan.plan on one H200, LoRA dropout finetune's default), with the
    breakdown behind each (fmforge.cost.finetune_memory)."""
    from fmforge.cost.estimate import model_from_config
    from fmforge.cost.plan import lora_params, plan
    from fmforge.hardware import get

    cfg = model_config(a)
    spec = model_from_config(cfg, a.preset if not a.tiny else "tiny", a.micro_batch)
    r = plan(1e6, get("h200"), 1, spec, 1e12, 1e8, lora_rank=a.rank)
    full, lora = r["finetune"]["full"], r["finetune"]["lora"]
    return {"full_gb": full["memory_per_device_gb"], "lora_gb": lora["memory_per_device_gb"],
            "lora_params": lora_params(cfg, a.rank), "params": spec.params,
            "full_breakdown": full["memory_breakdown"], "lora_breakdown": lora["memory_breakdown"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="result folder or .json file (default benchmarks/results/)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    ap.add_argument("--preset", default="llama-1b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model, short rows, few steps (a CPU check)")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = 2 x rank)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--case-timeout", type=int, default=400)
    ap.add_argument("--wheels", default=None, help="folder of pure-Python wheels (peft, accelerate) to import from")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.tiny and "--seq" not in sys.argv:
        a.seq, a.micro_batch, a.steps, a.warmup = 64, 2, 3, 1
    _wheels(a.wheels)
    if a.worker:
        r = run_hf_trainer(a) if a.worker == "hf-trainer-lora" else run_fmforge(a, a.worker.split("-", 1)[1])
        print("RESULT " + json.dumps(r), flush=True)
        return
    import torch  # noqa: F401  (record reads the GPU through it)

    header = provenance(a, peers=("transformers", "peft", "accelerate"))
    results: list[dict] = []
    plan_mem = cost_plan_memory(a)
    out = Path(a.out) if a.out else None
    if out is not None and out.suffix != ".json":
        out = out / f"finetune_throughput-{header['date'][:10]}.json"
    path = None
    for name in a.cases.split(","):
        cmd = [sys.executable, __file__, "--worker", name, "--device", a.device, "--preset", a.preset,
               "--micro-batch", str(a.micro_batch), "--seq", str(a.seq), "--rank", str(a.rank),
               "--steps", str(a.steps), "--warmup", str(a.warmup)] + (["--tiny"] if a.tiny else []) + \
              (["--wheels", a.wheels] if a.wheels else [])
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.case_timeout)
        except subprocess.TimeoutExpired:
            results.append({"case": name, "error": f"timeout after {a.case_timeout}s"})
            print(f"{name}: timed out", flush=True)
            continue
        lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not lines:
            results.append({"case": name, "error": p.stderr[-2000:]})
            print(f"{name}: FAILED\n{p.stderr[-3000:]}", flush=True)
        else:
            r = {"case": name, **json.loads(lines[0][7:]), "wall_s": time.perf_counter() - t0}
            key = "lora_gb" if "lora" in name else "full_gb"
            r["cost_plan_gb"] = plan_mem[key]
            if r.get("peak_memory_gb"):
                r["measured_over_plan"] = r["peak_memory_gb"] / plan_mem[key]
            results.append(r)
            peak = f"{r['peak_memory_gb']:.2f} GB" if r.get("peak_memory_gb") else "n/a (CPU)"
            print(f"{name}: {r['tokens_per_s']:,.0f} tokens/s, peak {peak} (cost plan {plan_mem[key]:.3f} GB), "
                  f"trainable {r['trainable_params']:,}", flush=True)
        by = {x["case"]: x for x in results if "tokens_per_s" in x}
        ratios = {}
        if "fmforge-lora" in by and "hf-trainer-lora" in by:
            ratios["lora_fmforge_over_hf_trainer"] = by["fmforge-lora"]["tokens_per_s"] / by["hf-trainer-lora"]["tokens_per_s"]
        if "fmforge-lora" in by and "fmforge-full" in by:
            ratios["lora_over_full_tokens_per_s"] = by["fmforge-lora"]["tokens_per_s"] / by["fmforge-full"]["tokens_per_s"]
        figures = {"preset": "tiny" if a.tiny else a.preset, "micro_batch": a.micro_batch, "seq": a.seq,
                   "lora_rank": a.rank, "steps": a.steps, "warmup": a.warmup, "cost_plan_memory": plan_mem,
                   "ratios": ratios, "results": results}
        path = write_result("finetune_throughput", header, figures, path or out)  # after every case
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
