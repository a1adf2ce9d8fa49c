"""The serving engine: greedy decoding with the slot KV cache gives exactly the tokens of
recomputing the whole sequence without a cache, for prompts of different lengths batched
together, at the padded static shapes CUDA graphs use, and through the continuous-batching
scheduler with more requests than slots (requests join and leave the batch mid-flight)."""
import pytest
import torch

from fmforge.config import ModelConfig
from fmforge.model.transformer import Transformer
from fmforge.serve.engine import Engine, greedy
from fmforge.serve.sampling import SamplingParams
from fmforge.serve.scheduler import QueueFull, Scheduler, Sequence


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, context_length=64, vocab_size=97, qk_norm=True,
                      init_std=0.2)
    return Transformer(cfg).eval()


def recompute(model, prompt, n):
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


PROMPTS = [[1, 5, 9], [3, 4, 5, 6, 7, 8, 2], [11]]


@pytest.mark.parametrize("buckets", [False, True])
def test_cached_greedy_equals_recomputation(model, buckets):
    got = greedy(model, PROMPTS, 12, buckets=buckets)
    for p, g in zip(PROMPTS, got):
        assert g == recompute(model, p, 12)


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="torch.compile on the CPU needs a C compiler")
@pytest.mark.parametrize("mode", ["pieces", "step"])
def test_compiled_equal_recomputation(model, mode):
    """serve.compile: the torch.compile'd layer pieces or whole step (what runs inside the CUDA
    graphs on a GPU)."""
    got = greedy(model, PROMPTS, 6, compile=mode, buckets=True)
    for p, g in zip(PROMPTS, got):
        assert g == recompute(model, p, 6)


def test_failed_step_ends_its_requests_not_the_scheduler(model):
    class Broken(Engine):
        def prefill(self, slots, prompts, all_logits):
            if any(p[0] == 0 for p in prompts):
                raise RuntimeError("boom")
            return super().prefill(slots, prompts, all_logits)
    sched = Scheduler(Broken(model, 2, 32))
    try:
        bad, good = Sequence([0, 1], SamplingParams(max_tokens=3)), Sequence([1, 2], SamplingParams(max_tokens=3))
        sched.submit([bad])
        assert bad.done.wait(30) and bad.finish_reason == "error" and "boom" in bad.error
        sched.submit([good])
        assert good.done.wait(30) and good.finish_reason == "length" and len(good.out) == 3
    finally:
        sched.close()


def test_scheduler_joins_and_leaves_the_batch(model):
    prompts = [[(7 * i + j) % 97 for j in range(1 + i % 5)] for i in range(9)]
    lengths = [3 + (i * 5) % 11 for i in range(9)]  # different lengths: sequences leave at different steps
    sched = Scheduler(Engine(model, 3, 32, buckets=True), max_queue=16)
    try:
        seqs = [Sequence(p, SamplingParams(max_tokens=n, temperature=0)) for p, n in zip(prompts, lengths)]
        sched.submit(seqs)
        for s in seqs:
            assert s.done.wait(60)
        for s, p, n in zip(seqs, prompts, lengths):
            assert s.finish_reason == "length" and s.out == recompute(model, p, n)
        assert sched.steps < sum(lengths)  # sequences really shared decode steps
        with pytest.raises(QueueFull):
            sched.submit([Sequence([1], SamplingParams(max_tokens=1)) for _ in range(17)])
    finally:
        sched.close()


def test_seeded_sampling_is_reproducible_whatever_the_batch(model):
    sched = Scheduler(Engine(model, 4, 48))
    try:
        def run(prompts, seed):
            seqs = [Sequence(p, SamplingParams(max_tokens=10, temperature=0.9, top_p=0.9, top_k=20, seed=seed))
                    for p in prompts]
            sched.submit(seqs)
            for s in seqs:
                s.done.wait(60)
            return [s.out for s in seqs]
        alone = run([[1, 2, 3]], 7)[0]
        assert run([[4, 4], [1, 2, 3], [9]], 7)[1] == alone
        assert run([[1, 2, 3]], 8)[0] != alone
    finally:
        sched.close()


@pytest.mark.slow
def test_benchmark_runs_tiny_on_cpu_and_cost_serve_prices_it(tmp_path):
    """benchmarks/serve_throughput.py --device cpu --tiny writes a result and a bench.json that
    `fmforge cost serve` prices: $/M tokens = price / (tokens/s * 3600) * 1e6 at the best row."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(root / "benchmarks" / "serve_throughput.py"), "--device", "cpu", "--tiny",
                    "--rounds", "1", "--out", str(tmp_path)], check=True, env=env, capture_output=True, timeout=600)
    result = json.loads((tmp_path / "serve_throughput.json").read_text())
    assert not result["errors"] and {r["system"] for r in result["results"]} == {"fmforge-eager", "hf-generate"}
    # fp32 on the CPU: the engine's greedy tokens are transformers' exactly
    assert all(r["greedy_agreement_with_hf"] == 1.0 for r in result["results"] if r["system"] != "hf-generate")
    bench = json.loads((tmp_path / "bench.json").read_text())
    out = subprocess.run([sys.executable, "-m", "fmforge", "cost", "serve", "--from-bench", str(tmp_path / "bench.json"),
                          "--price", "2.0", "--json"], check=True, env=env, capture_output=True, text=True, timeout=120)
    priced = json.loads(out.stdout)
    best = max(r["output_tokens_per_s"] for r in bench["results"])
    assert abs(priced["usd_per_million_tokens"] - 2.0 / (best * 3600) * 1e6) < 1e-9


def test_serve_package_has_no_import_circles_and_the_engine_needs_no_fastapi():
    import ast
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    graph = {}
    for f in (root / "fmforge" / "serve").glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fmforge.serve"):
                deps |= ({a.name for a in node.names} if node.module == "fmforge.serve"
                         else {node.module.split(".")[2]})
        graph[f.stem] = deps

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen
    assert not [m for m in graph if m in reach(m)]
    code = ("import sys, fmforge.serve.scheduler, fmforge.serve.engine, fmforge.serve.load, fmforge.cli; "
            "assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": str(root)}, timeout=120)
