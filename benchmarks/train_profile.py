"""Where a training step's time goes: fmforge vs nanoGPT at gpt2-124m, same batch, same run.

A diagnostic for benchmarks/train_throughput.py's MFU gap (issue 14: "measure where the 67 ms
go first"). Each case runs in its own process, built exactly as train_throughput.py builds
it (same model, optimizer, compile, bf16 autocast, loss read back every step), warmed up,
then `--steps` steps under torch.profiler. Per step it reports:
  - wall time, and GPU busy time (the union of kernel intervals): the difference is time the
    GPU waited for the host (launches, the per-step loss read, Python);
  - kernel launches per step;
  - GPU time by kind: matmul (cuBLAS/CUTLASS/nvjet), attention (flash/cuDNN/efficient),
    Triton (compiled fusions), optimizer (multi-tensor/foreach/fused Adam kernels), other;
  - the optimizer step on the GPU: the span from its first kernel to its last, the kernel time
    and launches inside it (GPU-side annotations such as `Optimizer.step` are spans, not
    kernels, and are left out of every sum);
  - the 15 kernels that take the most GPU time.

    python3 benchmarks/train_profile.py --nanogpt PATH_TO_NANOGPT [--cases ...] [--steps 10]

Writes benchmarks/results/train_profile-<date>.json (or --out).
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
from record import provenance, write_result  # noqa: E402

KINDS = (("attention", ("flash", "fmha", "attention", "cudnn", "sdpa")),
         ("matmul", ("gemm", "cutlass", "nvjet", "sm90_xmma", "cublas", "wgmma")),
         ("optimizer", ("multi_tensor", "adam", "foreach", "lpnorm", "clip")),  # kernels of that name
         ("triton", ("triton",)))


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if s >= end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def profile_case(name: str, steps: int, warmup: int, nanogpt: str | None) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    import train_throughput as tt

    system, model_name, batch, seq, opts = tt.CASES[name]
    step, fpt = tt.build_case(name, nanogpt)

    for i in range(warmup):
        step(i)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):  # unprofiled timing first: the profiler adds host overhead
        step(i)
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) / steps * 1e3
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(steps):
            step(i)
        torch.cuda.synchronize()
    gpu = [e for e in prof.events() if e.device_type.name == "CUDA" and e.time_range.elapsed_us() > 0]
    # GPU-side spans of record_function ranges (Optimizer.step, compiled graphs) are not kernels:
    # counted as kernels they double the time inside them (2026-12-07 files count them).
    kernels = [e for e in gpu if not getattr(e, "is_user_annotation", False)]
    spans = [e for e in gpu if getattr(e, "is_user_annotation", False) and e.name.startswith("Optimizer.step")]
    intervals = [(e.time_range.start, e.time_range.end) for e in kernels]
    inside = [k for k in kernels if any(s.time_range.start <= k.time_range.start < s.time_range.end for s in spans)]
    opt_kinds: dict[str, float] = {}
    for e in inside:
        opt_kinds[kind_of(e.name)] = opt_kinds.get(kind_of(e.name), 0.0) + e.time_range.elapsed_us()
    by_kind: dict[str, float] = {}
    by_name: dict[str, list] = {}
    for e in kernels:
        us = e.time_range.elapsed_us()
        by_kind[kind_of(e.name)] = by_kind.get(kind_of(e.name), 0.0) + us
        agg = by_name.setdefault(e.name, [0.0, 0])
        agg[0] += us
        agg[1] += 1
    top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:15]
    kernel_ms = sum(by_kind.values()) / steps / 1e3
    return {"case": name, "system": system, "batch": batch, "seq": seq, "steps": steps,
            "step_wall_ms": round(wall_ms, 3),
            "mfu": batch * seq / (wall_ms / 1e3) * fpt / tt.PEAK,
            "gpu_busy_ms_per_step": round(busy_us(intervals) / steps / 1e3, 3),
            "kernel_ms_per_step": round(kernel_ms, 3),
            "launches_per_step": round(len(kernels) / steps, 1),
            # the optimizer step on the GPU: from its first kernel to its last, the kernels in it
            "optimizer_span_ms_per_step": round(sum(e.time_range.elapsed_us() for e in spans) / steps / 1e3, 3),
            "optimizer_kernel_ms_per_step": round(sum(opt_kinds.values()) / steps / 1e3, 3),
            "optimizer_launches_per_step": round(len(inside) / steps, 1),
            "optimizer_gpu_ms_by_kind_per_step": {k: round(v / steps / 1e3, 3) for k, v in sorted(opt_kinds.items())},
            "gpu_ms_by_kind_per_step": {k: round(v / steps / 1e3, 3) for k, v in sorted(by_kind.items())},
            "top_kernels": [{"name": n[:160], "kind": kind_of(n), "ms_per_step": round(t / steps / 1e3, 3),
                             "calls_per_step": c / steps} for n, (t, c) in top]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="fmforge/gpt2-124m,nanogpt/gpt2-124m")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--nanogpt", default=None, help="folder with nanoGPT's model.py")
    ap.add_argument("--out", default=None)
    ap.add_argument("--case-timeout", type=int, default=240)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(profile_case(args.worker, args.steps, args.warmup, args.nanogpt)), flush=True)
        return
    header = provenance(args)
    results = []
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--worker", case, "--steps", str(args.steps), "--warmup", str(args.warmup)]
        if args.nanogpt:
            cmd += ["--nanogpt", args.nanogpt]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.case_timeout)
        except subprocess.TimeoutExpired:
            results.append({"case": case, "error": f"timeout after {args.case_timeout} s"})
            continue
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        results.append(json.loads(line[7:]) if line else {"case": case, "error": p.stderr[-2000:]})
        path = write_result("train_profile", header, {"results": results}, args.out)  # after each case
    for r in results:
        if "error" in r:
            print(r["case"], "ERROR", r["error"][-500:])
            continue
        print(f"{r['case']:24s} wall {r['step_wall_ms']:7.2f} ms  busy {r['gpu_busy_ms_per_step']:7.2f}  "
              f"launches {r['launches_per_step']:6.0f}  mfu {r['mfu']:.3f}  {r['gpu_ms_by_kind_per_step']}")
        print(f"    optimizer: span {r['optimizer_span_ms_per_step']:.2f} ms, kernels "
              f"{r['optimizer_kernel_ms_per_step']:.2f} ms in {r['optimizer_launches_per_step']:.0f} launches "
              f"{r['optimizer_gpu_ms_by_kind_per_step']}")
        for k in r["top_kernels"][:8]:
            print(f"    {k['ms_per_step']:7.3f} ms x{k['calls_per_step']:<5g} {k['kind']:9s} {k['name'][:90]}")
    print("->", path)


if __name__ == "__main__":
    main()
