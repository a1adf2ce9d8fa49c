"""Where a decode step's time goes: the serving engine's CUDA-graph step at batch 1 and 32,
timed on the GPU alone (back-to-back graph replays between CUDA events), beside the time
it takes just to read every weight once (the memory-bandwidth floor of a decode step), and
the step's kernels by GPU time (torch.profiler over graph replays).

A diagnostic for benchmarks/serve_throughput.py's figures, not a comparison with a peer:
serve_throughput.py measures tokens/s end to end against HF `generate`; this says how much of
a step is weight reading, how much other kernels, and how much the host adds.

    python3 benchmarks/serve_profile.py --out DIR [--variants graphs,step] [--tiny --device cpu]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from record import provenance, write_result  # noqa: E402
from serve_throughput import build_model  # noqa: E402


def gpu_ms(fn, n: int, cuda: bool) -> float:
    import torch

    fn()
    if not cuda:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e3
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / n


def kernels(fn, cuda: bool, top: int = 25) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(10):
            fn()
        if cuda:
            import torch

            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) if cuda else e.self_cpu_time_total
        if t is None:
            t = getattr(e, "cuda_time_total", 0)
        if cuda and e.device_type.name != "CUDA":
            continue
        rows.append({"name": e.key[:120], "count_per_step": e.count / 10, "us_per_step": round(t / 10, 2)})
    rows.sort(key=lambda r: -r["us_per_step"])
    return rows[:top]


def main() -> None:
    import torch

    from fmforge.serve.engine import Engine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--variants", default="graphs,step,step-tuned",
                    help="graphs (no compile), step, pieces, step-tuned (step with Inductor's "
                         "coordinate-descent tuning of its kernels' launch settings)")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--length", type=int, default=256, help="attended length (prompt + generated)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    a.dtype = a.dtype or ("bfloat16" if a.device == "cuda" else "float32")
    header = provenance(a)
    cuda = a.device == "cuda"
    model = build_model(a)
    weights = [p for p in model.parameters()]
    nbytes = sum(p.numel() * p.element_size() for p in weights)
    read_ms = gpu_ms(lambda: [p.sum(dtype=torch.float32) for p in weights], 20, cuda)
    figures = {"weight_bytes": nbytes, "weight_read_ms": round(read_ms, 4),
               "weight_read_tb_s": round(nbytes / read_ms / 1e9, 3), "variants": {}}
    print(f"weights {nbytes / 1e9:.2f} GB read in {read_ms:.3f} ms ({nbytes / read_ms / 1e9:.2f} TB/s)", flush=True)
    batches = [int(b) for b in a.batches.split(",")]
    length = min(a.length, model.cfg.context_length)
    out = Path(a.out) / ("serve_profile" + ("-tiny" if a.tiny else "") + ".json") if a.out else None
    for v in a.variants.split(","):
        if v == "step-tuned":
            import torch._inductor.config as inductor_config

            inductor_config.coordinate_descent_tuning = True
        t0 = time.perf_counter()
        eng = Engine(model, max(batches), length, graphs=cuda, buckets=True,
                     compile={"graphs": False, "step": "step", "pieces": "pieces", "step-tuned": "step"}[v])
        eng.warmup(batches, [length])
        figures.setdefault("warmup_s", {})[v] = round(time.perf_counter() - t0, 1)
        rows = {}
        for b in batches:
            toks, pos = [1] * b, [length - 8] * b
            if cuda:
                graph, static, _ = eng._graph(*eng.shape_for(b, length))
                static[0].fill_(1)
                static[1].fill_(length - 8)
                step = graph.replay
            else:
                def step():
                    eng.decode(toks, pos)
            ms = gpu_ms(step, a.steps, cuda)
            t0 = time.perf_counter()
            eng.decode_greedy(toks, [length - 40] * b, 32)  # the scheduler's path: 32 steps per round trip
            host_ms = (time.perf_counter() - t0) / 32 * 1e3
            rows[b] = {"step_ms": round(ms, 4), "tokens_per_s_step_only": round(b / ms * 1e3, 1),
                       "decode_greedy_ms_per_step": round(host_ms, 4),
                       "weight_read_share": round(read_ms / ms, 3), "kernels": kernels(step, cuda)}
            print(f"{v:>7} b={b:<3} step {ms:.3f} ms ({b / ms * 1e3:,.0f} tok/s GPU-only), decode_greedy "
                  f"{host_ms:.3f} ms/step; weight read = {read_ms / ms:.0%} of the step", flush=True)
            for k in rows[b]["kernels"][:8]:
                print(f"          {k['us_per_step']:9.1f} us  x{k['count_per_step']:<6g} {k['name'][:80]}")
        figures["variants"][v] = rows
        del eng
        out = write_result("serve_profile" + ("-tiny" if a.tiny else ""), header, figures, out)  # after each variant
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
