"""The output head + cross-entropy alone, whole (Transformer.loss_head) or in chunks of tokens
(train.loss_chunk_tokens, fmforge.model.chunked_loss): time of a forward + backward, the
bytes autograd keeps for the backward, and the peak memory of the step.

Each case runs in its own process, so that a peak is its own: on CUDA torch's
max_memory_allocated above what the inputs take; on a CPU the process's peak RSS above the
RSS with the inputs made (ru_maxrss, a high-water mark: read before the warm-up step and
after the timed ones).

    python benchmarks/loss_head.py --device cpu --tokens 4096 --d 512 --vocab 32000 --chunks 0,1024,256
    python benchmarks/loss_head.py --tokens 32768 --d 2048 --vocab 32000 --chunks 0,4096,1024   # llama-1b b16
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


def run_case(a, chunk: int) -> dict:
    import functools
    import resource

    import torch

    from fmforge.model.chunked_loss import chunked_loss_head
    from fmforge.model.transformer import Transformer

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    h = torch.randn(a.tokens, a.d, device=dev, generator=g, requires_grad=True)
    w = (torch.randn(a.vocab, a.d, device=dev, generator=g) * a.d ** -0.5).requires_grad_()
    t = torch.randint(0, a.vocab, (a.tokens,), device=dev, generator=g)
    head = functools.partial(chunked_loss_head, chunk_tokens=chunk) if chunk else Transformer.loss_head
    if a.compile:
        head = torch.compile(head)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16)
    saved = []

    def step():
        with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.numel() * x.element_size()) or x,
                                                      lambda x: x):
            with amp:
                loss = head(h, w, t, "mean", a.cap)
        loss.backward()
        h.grad = w.grad = None

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # the RSS mark only rises: read before the warm-up, whose peak is then counted (the same
    # step as the timed ones; compilation's own memory too with --compile)
    base = None if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()  # warm-up (compilation, allocator)
    sync()
    if cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    saved.clear()
    step()
    saved_bytes = sum(saved)
    times = []
    for _ in range(a.steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"chunk_tokens": chunk or None, "step_ms_median": sorted(times)[len(times) // 2] * 1e3,
            "step_ms_min": min(times) * 1e3, "saved_for_backward_mb": saved_bytes / 1e6,
            "peak_above_inputs_mb": (peak - base) / 1e6 if cuda else None,
            "peak_rss_above_inputs_mb": None if cuda else (peak - base) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--chunks", default="0,4096,1024", help="tokens per chunk; 0: the whole head")
    ap.add_argument("--cap", type=float, default=None, help="model.logit_softcap")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (as training on a GPU)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker is not None:
        print("RESULT " + json.dumps(run_case(a, a.worker)), flush=True)
        return
    header = provenance(a)
    results = []
    for chunk in [int(c) for c in a.chunks.split(",")]:
        p = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--worker", str(chunk)], capture_output=True,
                           text=True)
        lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
        if p.returncode or not lines:
            print(f"chunk {chunk}: FAILED\n{p.stderr[-3000:]}", flush=True)
            results.append({"chunk_tokens": chunk or None, "error": p.stderr[-1500:]})
            continue
        r = json.loads(lines[0][7:])
        results.append(r)
        peak = r["peak_above_inputs_mb"] if r["peak_above_inputs_mb"] is not None else r["peak_rss_above_inputs_mb"]
        print(f"chunk {chunk or 'off':>6}: step {r['step_ms_median']:8.1f} ms  saved {r['saved_for_backward_mb']:8.1f} MB"
              f"  peak +{peak:8.1f} MB", flush=True)
    shape = {k: getattr(a, k) for k in ("device", "tokens", "d", "vocab", "cap", "bf16", "compile")}
    print(f"wrote {write_result('loss_head', header, {'shape': shape, 'results': results}, a.out)}")


if __name__ == "__main__":
    main()
