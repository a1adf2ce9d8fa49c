"""FSDP2 at world size 1 against the plain path, and a real torchrun/NCCL run that resumes.

1. throughput: the same model, batch and optimizer through fmforge's training step
   (fmforge.train.step.TrainStep: micro-batch, backward, clip, AdamW, loss read back), in
   its own process each: `plain` (one process, no wrapper) and `fsdp` (torchrun
   --nproc_per_node 1, train.parallel.strategy=fsdp: fully_shard per block, bf16 params /
   fp32 reduce), `ddp` too. After `--warmup` steps (compilation) `--steps` are timed.
   Target: fsdp within 5% of plain tokens/s at llama-1b (issue 13).
2. resume: a small recipe on text from Python's standard library (no download), trained
   with `torchrun --nproc_per_node 1 -m fmforge train ... strategy=fsdp` (NCCL on a GPU)
   uninterrupted with a checkpoint half-way; then, from a copy holding only that
   checkpoint, `--resume`d under torchrun, and resumed by a plain `fmforge train --resume`
   (1 process, no FSDP: another strategy reading the sharded checkpoint). Losses are
   compared step by step with the uninterrupted run's.

    python3 benchmarks/fsdp_overhead.py --out DIR                 # on a CUDA machine
    python3 benchmarks/fsdp_overhead.py --device cpu --tiny --out DIR   # minutes on a CPU (tests)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

TINY_MODEL = dict(vocab_size=512, d_model=64, n_layers=2, n_heads=2, context_length=64)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# ------------------------------------------------------------------ 1. throughput
def run_case(case: str, model_name: str, tiny: bool, device: str, batch: int, steps: int, warmup: int) -> dict:
    import torch

    from fmforge.config import ModelConfig, TrainConfig
    from fmforge.model.flops import count_params, flops_per_token
    from fmforge.model.presets import PRESETS
    from fmforge.model.transformer import Transformer
    from fmforge.train.optim import build_optimizer
    from fmforge.train.parallelize import choose_strategy, parallelize, setup, teardown
    from fmforge.train.step import TrainStep

    cfg = ModelConfig(**(TINY_MODEL if tiny else PRESETS[model_name]))
    strategy = {"plain": "auto", "fsdp": "fsdp", "ddp": "ddp"}[case]
    tcfg = TrainConfig(max_steps=1, device=device, parallel={"strategy": strategy})
    rt = setup(tcfg)
    torch.manual_seed(0)
    with torch.device(rt.device):
        model = Transformer(cfg)
    rt.strategy, why = choose_strategy(tcfg, count_params(cfg).total, rt.world)
    model = parallelize(model, rt)
    opt = build_optimizer(model, tcfg, rt.device.type)
    step = TrainStep(model, opt, rt, accum=1, grad_clip=1.0)
    seq = cfg.context_length
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=g) for _ in range(4)]
    if rt.device.type == "cuda":
        data = [d.pin_memory() for d in data]
    it = {"i": 0}

    def next_batch():
        d = data[it["i"] % len(data)]
        it["i"] += 1
        return d[:, :-1], d[:, 1:]

    def sync():
        if rt.device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step(next_batch)
    sync()
    warm_s = time.perf_counter() - t0
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [step(next_batch).loss for _ in range(steps)]
    sync()
    dt = time.perf_counter() - t0
    res = {"case": case, "strategy": rt.strategy, "why": why, "world": rt.world, "model": "tiny" if tiny else model_name,
           "batch": batch, "seq": seq, "tokens_per_s": batch * seq * steps / dt, "step_ms": dt / steps * 1e3,
           "warmup_s": warm_s, "final_loss": losses[-1], "flops_per_token": flops_per_token(cfg, seq),
           "compile": rt.compile, "dtype": str(rt.autocast_dtype)}
    if rt.device.type == "cuda":
        res["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
    teardown(rt)
    return res


def throughput(a) -> dict:
    results = {}
    for case in a.cases.split(","):
        cmd = [__file__, "--worker", case, "--model", a.model, "--device", a.device, "--batch", str(a.batch),
               "--steps", str(a.steps), "--warmup", str(a.warmup)] + (["--tiny"] if a.tiny else [])
        cmd = [*TORCHRUN, *cmd] if case != "plain" else [sys.executable, *cmd]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.case_timeout, env=_env())
        except subprocess.TimeoutExpired:
            results[case] = {"case": case, "error": f"timeout after {a.case_timeout}s"}
            continue
        lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if p.returncode or not lines:
            results[case] = {"case": case, "error": p.stderr[-2000:]}
            print(f"{case}: FAILED\n{p.stderr[-3000:]}", flush=True)
            continue
        results[case] = json.loads(lines[0][7:])
        r = results[case]
        print(f"{case:6s} {r['strategy']:6s} {r['tokens_per_s']:>12,.0f} tok/s  step {r['step_ms']:.1f} ms  "
              f"warmup {r['warmup_s']:.0f}s", flush=True)
    out = {"cases": results}
    if "tokens_per_s" in results.get("plain", {}):
        for case in ("fsdp", "ddp"):
            if "tokens_per_s" in results.get(case, {}):
                ratio = results[case]["tokens_per_s"] / results["plain"]["tokens_per_s"]
                out[f"{case}_vs_plain"] = ratio
                print(f"{case} / plain = {ratio:.3f}", flush=True)
        if "fsdp_vs_plain" in out:
            out["fsdp_within_5pct"] = out["fsdp_vs_plain"] >= 0.95
    return out


# ------------------------------------------------------------------ 2. checkpoint and resume
def _corpus(dest: Path) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for pkg in ("json", "email", "collections", "importlib", "http", "logging", "asyncio", "xml"):
        for f in sorted((stdlib / pkg).glob("*.py")):
            (dest / pkg).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest / pkg / f.name)


def _losses(path: Path) -> list[float]:
    return [json.loads(l)["loss"] for l in open(path) if '"loss"' in l]


def resume(a, work: Path) -> dict:
    import yaml

    corpus = work / "corpus"
    _corpus(corpus)
    model = dict(TINY_MODEL) if a.tiny else dict(d_model=256, n_layers=4, n_heads=4, context_length=256)
    model.pop("vocab_size", None)
    steps = a.resume_steps
    recipe = {"name": "fsdp-resume", "out_dir": str(work / "runs"),
              "data": {"sources": [str(corpus)], "include": ["*.py"], "val_fraction": 0.05},
              "tokenizer": {"vocab_size": 512 if a.tiny else 2048}, "model": model,
              "train": {"max_steps": steps, "micro_batch": 4 if a.tiny else 16, "lr": 1e-3, "warmup_steps": 2,
                        "device": a.device, "checkpoint_every": steps // 2, "keep_checkpoints": 4,
                        "parallel": {"strategy": "fsdp"}, **({"threads": 1} if a.device == "cpu" else {})},
              "eval": {"max_new_tokens": 8, "max_docs": 4}}
    rpath = work / "recipe.yaml"
    rpath.write_text(yaml.safe_dump(recipe))
    env = _env()
    fm = ["-m", "fmforge"]
    t0 = time.perf_counter()
    from fmforge.config import load_recipe
    from fmforge.pipeline import Pipeline

    pipe = Pipeline(load_recipe(rpath), verbose=False)
    for stage in ("collect", "prepare", "tokenizer"):  # in this process: the runs below find the shards
        getattr(pipe, stage)()
    prep_s = time.perf_counter() - t0
    out: dict = {"recipe": recipe, "prepare_s": prep_s}

    def train(label, launcher, *extra):
        t = time.perf_counter()
        p = subprocess.run([*launcher, *fm, "train", "--recipe", str(rpath), *extra], capture_output=True, text=True,
                           env=env, timeout=a.case_timeout)
        out[f"{label}_s"] = time.perf_counter() - t
        if p.returncode:
            raise RuntimeError(f"{label}: exit {p.returncode}\n{p.stderr[-3000:]}")
        out[f"{label}_log"] = [l for l in p.stderr.splitlines() if l.startswith(("parallel:", "batch:", "resumed"))]
        return p

    half = steps // 2
    train("full", TORCHRUN, "--out", str(work / "full"))
    full = _losses(work / "full" / "metrics.jsonl")
    # the run as if stopped after its half-way checkpoint: later checkpoints and outputs gone
    for d in ("part", "plain"):
        shutil.copytree(work / "full", work / d)
        for ck in (work / d / "checkpoints").glob("step-*"):
            if ck.name != f"step-{half:08d}":
                shutil.rmtree(ck)
        for f in ("model.safetensors", "summary.json"):
            (work / d / f).unlink()
    train("resumed", TORCHRUN, "--out", str(work / "part"), "--resume")
    resumed = _losses(work / "part" / "metrics.jsonl")
    train("resumed_plain", [sys.executable], "--out", str(work / "plain"), "--resume",
          "--set", "train.parallel.strategy=auto")
    plain = _losses(work / "plain" / "metrics.jsonl")
    ck = sorted((work / "full" / "checkpoints").glob("step-*"))
    out.update(full_losses=full, resumed_losses=resumed, resumed_plain_losses=plain,
               checkpoint_files=sorted(p.name for p in ck[-1].iterdir()) if ck else [])

    def rel(xs):
        return max((abs(x - y) / abs(y) for x, y in zip(xs, full)), default=None) if len(xs) == len(full) else None

    out["resumed_max_rel_diff"], out["resumed_plain_max_rel_diff"] = rel(resumed), rel(plain)
    print(f"resume: {steps} steps; torchrun resume max rel diff {out['resumed_max_rel_diff']}, "
          f"plain-process resume {out['resumed_plain_max_rel_diff']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="folder for the result JSON (default benchmarks/results/)")
    ap.add_argument("--device", default="cuda", help="cuda or cpu")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model and a short run (CPU check)")
    ap.add_argument("--model", default="llama-1b")
    ap.add_argument("--cases", default="plain,fsdp,ddp")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 8; tiny 4)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 30; tiny 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 8; tiny 1)")
    ap.add_argument("--resume-steps", type=int, default=None, help="steps of the resume run (default 40; tiny 4)")
    ap.add_argument("--parts", default="throughput,resume")
    ap.add_argument("--case-timeout", type=int, default=420)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.batch = a.batch or (4 if a.tiny else 8)
    a.steps = a.steps or (3 if a.tiny else 30)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.tiny else 8)
    a.resume_steps = a.resume_steps or (4 if a.tiny else 40)
    if a.worker:
        print("RESULT " + json.dumps(run_case(a.worker, a.model, a.tiny, a.device, a.batch, a.steps, a.warmup)),
              flush=True)
        return
    import torch  # noqa: F401  (record reads the GPU through it)

    header = provenance(a)
    figures: dict = {"target": "fsdp tokens/s within 5% of plain at world size 1"}
    path = None
    if a.out:
        path = Path(a.out) / f"fsdp_overhead-{header['date'][:10]}{'-tiny' if a.tiny else ''}.json"
    if "throughput" in a.parts:
        figures["throughput"] = throughput(a)
        path = write_result("fsdp_overhead", header, figures, path)
    if "resume" in a.parts:
        work = Path(tempfile.mkdtemp(prefix="fsdp-resume-"))
        try:
            figures["resume"] = resume(a, work)
        except Exception as e:  # keep the throughput figures, say what failed
            figures["resume"] = {"error": str(e)[-3000:]}
            print(f"resume: FAILED {str(e)[-3000:]}", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        path = write_result("fsdp_overhead", header, figures, path)
    print(f"wrote {path}")
    failed = [k for k in ("throughput", "resume") if k in figures and
              ("error" in figures[k] or any("error" in c for c in figures[k].get("cases", {}).values()))]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
