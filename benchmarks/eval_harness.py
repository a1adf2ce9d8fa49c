"""Multiple-choice scoring, fmforge vs lm-evaluation-harness, side by side on one model.

A random-initialised HF Llama (seed 0; GPT-2-small shape, or --tiny for a CPU check) with
a byte-level BPE trained on the items, saved as an HF folder; HellaSwag items (the shared
file, or synthetic ones); both harnesses score the same items:
  - fmforge: `fmforge.eval` (the HF folder loaded as an fmforge model), fp32 and, on CUDA, bf16
  - lm-eval: `simple_evaluate(model="hf", ...)` with a local task YAML, fp32 (and bf16 on CUDA)
Reports items/s of each (model loaded, timing the scoring of all items: lm-eval's time
includes building its request list, which is part of what a user waits for), the max
per-item log-likelihood difference (fp32 vs fp32) and whether acc / acc_norm agree.

    python3 benchmarks/eval_harness.py --out DIR [--items 2000] [--device cuda] [--tiny]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

ROOT = Path(__file__).resolve().parents[1]
HELLASWAG = ROOT.parent / "shared" / "data" / "eval" / "tasks" / "hellaswag.jsonl.gz"
WORDS = "the a man woman dog walks runs over into ball house tree river then she he on in with and red".split()

UTILS = '''
from lm_eval.tasks.hellaswag.utils import preprocess

def process_docs(dataset):
    return dataset.map(lambda d: {"query": preprocess(d["ctx"]), "choices": [preprocess(e) for e in d["endings"]],
                                  "gold": int(d["label"])})
'''
YAML = """task: hs_bench
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
process_docs: !function utils.process_docs
doc_to_text: "{{{{query}}}}"
doc_to_target: gold
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def items(path: Path | None, n: int) -> list[dict]:
    if path is not None and path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path) as f:
            rows = []
            for line in f:
                rows.append(json.loads(line))
                if len(rows) == n:
                    return rows
            return rows
    rng = random.Random(0)
    s = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"ctx": f"Act: {s(20)}", "endings": [s(rng.randint(5, 20)) for _ in range(4)], "label": rng.randrange(4)}
            for _ in range(n)]


def build_model(folder: Path, texts: list[str], tiny: bool) -> dict:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600 if tiny else 8192, show_progress=False,
                                                       special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    shape = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4) if tiny else
             dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12))
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), num_key_value_heads=shape["num_attention_heads"],
                      max_position_embeddings=1024, initializer_range=0.3 if tiny else 0.05,
                      tie_word_embeddings=False, rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=0, **shape)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(folder, safe_serialization=True)
    return {**shape, "vocab_size": tok.get_vocab_size()}


def run_fmforge(model_dir: Path, data: Path, device: str, bf16: bool) -> tuple[float, list[dict]]:
    import torch

    from fmforge.config import EvalConfig
    from fmforge.eval.commands import run_tasks
    from fmforge.eval.load import load_for_eval

    lm = load_for_eval(model_dir, torch.device(device)).lm
    if bf16:
        lm.autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    run_tasks(lm, [f"hellaswag={data}"], EvalConfig(), limit=4)  # warm-up: kernels, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _, rows = run_tasks(lm, [f"hellaswag={data}"], EvalConfig())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, rows["hellaswag"]


def run_lm_eval(model_dir: Path, yaml_dir: Path, device: str, dtype: str, batch: int) -> tuple[float, list[dict]]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model_dir), dtype=dtype, device=device, batch_size=batch)
    tm = TaskManager(include_path=str(yaml_dir), include_defaults=False)
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(model=lm, tasks=["hs_bench"], task_manager=tm, log_samples=True)
    secs = time.perf_counter() - t0
    return secs, sorted(out["samples"]["hs_bench"], key=lambda s: s["doc_id"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for eval_harness.json")
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--data", type=Path, default=HELLASWAG, help="HellaSwag JSONL(.gz); synthetic items if absent")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model: checks the script on a CPU")
    ap.add_argument("--lm-eval-batch", type=int, default=64)
    a = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    header = provenance(a, peers=("lm_eval", "transformers"))
    work = Path(tempfile.mkdtemp(prefix="fmforge-evalbench-"))
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf-cache"))
    rows = items(a.data, a.items)
    data = work / "hellaswag.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "tasks").mkdir()
    (work / "tasks" / "utils.py").write_text(UTILS)
    (work / "tasks" / "hs_bench.yaml").write_text(YAML.format(data=data))
    shape = build_model(work / "llama", [json.dumps(r) for r in rows], a.tiny)
    cases = {}
    secs, ours = run_fmforge(work / "llama", data, a.device, bf16=False)
    cases["fmforge_fp32"] = secs
    secs, theirs = run_lm_eval(work / "llama", work / "tasks", a.device, "float32", a.lm_eval_batch)
    cases["lm_eval_fp32"] = secs
    if a.device.startswith("cuda"):
        cases["fmforge_bf16"], _ = run_fmforge(work / "llama", data, a.device, bf16=True)
        cases["lm_eval_bf16"], _ = run_lm_eval(work / "llama", work / "tasks", a.device, "bfloat16", a.lm_eval_batch)
    diff = max(abs(x - float(r[0])) for m, s in zip(ours, theirs) for x, r in zip(m["loglik"], s["filtered_resps"]))
    same_acc = all(m["acc"] == s["acc"] and m["acc_norm"] == s["acc_norm"] for m, s in zip(ours, theirs))
    n = len(rows)
    figures = {"items": n, "requests": 4 * n, "model": shape, "data": str(a.data if a.data.is_file() else "synthetic"),
               "seconds": cases, "items_per_s": {k: n / v for k, v in cases.items()},
               "speedup_fp32": cases["lm_eval_fp32"] / cases["fmforge_fp32"],
               "max_abs_loglik_diff_fp32": diff, "acc_identical_fp32": same_acc,
               "acc": sum(m["acc"] for m in ours) / n, "acc_norm": sum(m["acc_norm"] for m in ours) / n}
    if "fmforge_bf16" in cases:
        figures["speedup_bf16"] = cases["lm_eval_bf16"] / cases["fmforge_bf16"]
    path = write_result("eval_harness", header, figures, Path(a.out) / "eval_harness.json")
    print(json.dumps(figures, indent=2))
    print(path)


if __name__ == "__main__":
    main()
