"""GGUF export checked by llama.cpp itself: greedy tokens and CPU tokens/s, side by side.

One fmforge model is exported twice, `fmforge export --format gguf` (f32, f16, q8_0 by
default) and `--format hf`; then on the same prompts, greedy, on CPU with the same thread count:
  - fmforge's own generation (fmforge.eval.generate, KV cache, fp32);
  - llama-cpp-python on each GGUF file (a plain argmax loop over `Llama.eval` logits, so no
    sampler setting can differ);
  - transformers `generate(do_sample=False)` on the HF export (fp32).
Each stops at <|endoftext|> or after --max-new tokens. Reported: per prompt whether the token
ids equal fmforge's and the first position where they differ; for llama.cpp also the largest
|logit difference| from fmforge's fp32 forward over every prompt position; decode tokens/s of each (the
prompt's prefill included in the time, the same for all); and whether llama.cpp's tokenizer
gives HF tokenizers' ids on a set of strings (contractions, digit runs, Unicode, whitespace
runs, the chat format's special tokens).

llama-cpp-python is built from the registry's source package (`pip install llama-cpp-python`,
CMAKE_ARGS="-DGGML_NATIVE=OFF" where the build machine's CPU differs); without it the llama.cpp
part is skipped and the result says so. Where the package was installed without its compiled
library (`-C wheel.cmake=false`), LLAMA_CPP_LIB_PATH names the folder holding libllama.so.

    python benchmarks/gguf_llamacpp.py --model runs/demo            # a trained run
    python benchmarks/gguf_llamacpp.py --tiny [--plain] --max-new 8  # random weights, seconds
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from record import provenance, write_result  # noqa: E402

PROMPTS = ["def fibonacci(n):", "import os\nimport sys\n\n\ndef main(", "class Stack:\n    def __init__(self):\n",
           "# Return the sum of a list\ndef total(xs):\n    ", "for i in range(10):\n    if i % 2 == 0:\n"]
TOKENIZE = ["Hello, world! It's 2026; they'll've 1234567 items.", "naïve café — 日本語テキスト 🙂 ½",
            "def f(x):\n\n\n    return x  \t # done\r\n", "   leading and trailing   ", "can't WON'T I'M we'Re",
            "<|user|>\nhi there<|endoftext|>\n<|assistant|>\n", "x=3.14159e-10;y=0x1F"]


def tiny_run(work: Path, qk_norm: bool) -> Path:
    """A random-weight run folder with fmforge's own tokenizer: for a quick check, not a figure."""
    import torch
    from fmforge.config import ModelConfig, TokenizerConfig
    from fmforge.model.transformer import Transformer
    from fmforge.model.weights import save_model
    from fmforge.tokenizer.bpe import train_bpe

    texts = [Path(p).read_text() for p in sorted(Path(argparse.__file__).parent.glob("json/*.py"))]
    train_bpe(texts, TokenizerConfig(vocab_size=512), work / "run" / "tokenizer")
    cfg = ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
                      context_length=128, qk_norm=qk_norm)
    torch.manual_seed(0)
    (work / "run" / "train").mkdir(parents=True)
    save_model(Transformer(cfg).state_dict(), cfg, work / "run" / "train")
    return work / "run"


def timed_each(fn, prompts):
    """(outputs, seconds, generated tokens) of fn over every prompt, after one warm-up call."""
    fn(prompts[0])
    t = time.perf_counter()
    outs = [fn(p) for p in prompts]
    return outs, time.perf_counter() - t, sum(len(o) for o in outs)


def compare(ref: list[list[int]], got: list[list[int]]) -> dict:
    firsts = []
    for a, b in zip(ref, got):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        firsts.append(n if n is not None else (None if len(a) == len(b) else min(len(a), len(b))))
    return {"prompts_equal": sum(f is None for f in firsts), "prompts": len(ref), "first_difference": firsts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="run folder or model folder (default: --tiny)")
    ap.add_argument("--tiny", action="store_true", help="random weights, tiny shape (QK-norm: llama.cpp's qwen3)")
    ap.add_argument("--plain", action="store_true", help="with --tiny: no QK-norm (llama.cpp's llama, q/k permuted)")
    ap.add_argument("--max-new", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", default="f32,f16,q8_0")
    ap.add_argument("--out", type=Path, help="result file (default benchmarks/results/gguf_llamacpp-DATE.json)")
    args = ap.parse_args()
    if not args.model and not args.tiny:
        ap.error("give --model RUN or --tiny")
    header = provenance(args, peers=("llama_cpp_python", "transformers", "gguf", "tokenizers"))

    import torch
    from tokenizers import Tokenizer
    from fmforge.eval.generate import generate
    from fmforge.export.gguf_file import write_gguf
    from fmforge.export.writer import export_hf, find_tokenizer, model_dir
    from fmforge.model.weights import load_model
    from fmforge.tokenizer.bpe import EOT

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    mdir = model_dir(tiny_run(work, not args.plain) if args.tiny else args.model)
    tok_file = find_tokenizer(mdir)
    tok = Tokenizer.from_file(str(tok_file))
    eot = tok.token_to_id(EOT)
    net = load_model(mdir)
    cfg = net.cfg
    prompts = [tok.encode(p).ids for p in PROMPTS]
    budget = min(args.max_new, cfg.context_length - max(len(p) for p in prompts))
    figures: dict = {"model": {"dir": str(mdir), "params": sum(p.numel() for p in net.parameters()),
                               "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                               "kv_heads": cfg.kv_heads, "vocab": cfg.vocab_size, "qk_norm": cfg.qk_norm,
                               "random_weights": bool(args.tiny)},
                     "setup": {"device": "cpu", "threads": args.threads, "max_new_tokens": budget,
                               "decoding": "greedy, stop at <|endoftext|>", "prompts": PROMPTS}}

    ref, secs, n = timed_each(lambda p: generate(net, p, budget, temperature=0.0, stop_id=eot), prompts)
    figures["fmforge"] = {"tokens_per_s": n / secs, "tokens": n, "seconds": secs, "dtype": "float32",
                          "texts": [tok.decode(o) for o in ref]}

    hf_dir = work / "hf"
    hf_dir.mkdir()
    export_hf(mdir, hf_dir)
    try:
        import transformers
        transformers.logging.set_verbosity_error()  # generation_config's max_length vs max_new_tokens notice
        hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()

        def hf_greedy(p):
            with torch.no_grad():
                out = hf.generate(torch.tensor([p]), do_sample=False, max_new_tokens=budget,
                                  eos_token_id=eot, pad_token_id=eot)[0, len(p):].tolist()
            return out[:out.index(eot)] if eot in out else out

        outs, secs, n = timed_each(hf_greedy, prompts)
        figures["transformers"] = {"tokens_per_s": n / secs, "tokens": n, "seconds": secs, "dtype": "float32",
                                   "arch": type(hf).__name__, **compare(ref, outs)}
    except ImportError as e:
        figures["transformers"] = {"skipped": f"transformers not importable ({e})"}

    try:
        from llama_cpp import Llama
    except Exception as e:  # not installed, or installed without its shared library (RuntimeError)
        figures["llama_cpp"] = {"skipped": f"llama-cpp-python not usable ({type(e).__name__}: {e}); "
                                           "pip install llama-cpp-python"}
    else:
        figures["llama_cpp"] = {}
        for dtype in args.dtypes.split(","):
            path = work / f"model-{dtype}.gguf"
            info = write_gguf(mdir, tok_file, path, dtype)
            llm = Llama(str(path), n_ctx=cfg.context_length, n_threads=args.threads, n_threads_batch=args.threads,
                        n_batch=cfg.context_length, verbose=False, seed=0)

            import numpy as np

            def last_logits(llm=llm):  # the last evaluated token's logits (Llama.scores holds
                # them only with logits_all, which would also project every prompt position)
                return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))

            def ll_greedy(p, llm=llm):
                llm.reset()
                llm.eval(p)
                out = []
                for _ in range(budget):
                    nxt = int(last_logits().argmax())
                    if nxt == eot:
                        break
                    out.append(nxt)
                    llm.eval([nxt])
                return out

            outs, secs, n = timed_each(ll_greedy, prompts)
            row = {"file_mib": info["bytes"] / 2**20, "arch": info["arch"], "tensor_types": info["tensor_types"],
                   "tokens_per_s": n / secs, "tokens": n, "seconds": secs, **compare(ref, outs)}
            # logits at every prompt position vs fmforge's fp32 forward (a second context that keeps them all)
            full = Llama(str(path), n_ctx=cfg.context_length, n_threads=args.threads, n_batch=cfg.context_length,
                         logits_all=True, verbose=False)
            diffs = []
            for p in prompts:
                full.reset()
                full.eval(p)
                with torch.no_grad():
                    want = net(torch.tensor([p]))[0].numpy()
                diffs.append(float(np.abs(np.asarray(full.scores[:len(p)]) - want).max()))
            row["max_abs_logit_diff"] = max(diffs)
            del full
            if dtype == args.dtypes.split(",")[0]:  # the tokenizer is the same in every file
                mism = []
                for s in TOKENIZE + PROMPTS:
                    want = tok.encode(s).ids
                    got = llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)
                    if got != want:
                        mism.append({"text": s, "hf": want, "llama_cpp": got})
                figures["tokenizer"] = {"pre": info["pre"], "strings": len(TOKENIZE) + len(PROMPTS),
                                        "mismatches": mism}
            figures["llama_cpp"][dtype] = row
            del llm
    shutil.rmtree(work, ignore_errors=True)
    path = write_result("gguf_llamacpp", header, figures, args.out)
    print(f"wrote {path}")
    for k in ("fmforge", "transformers"):
        print(k, {x: v for x, v in figures[k].items() if x != "texts"})
    for k, v in figures["llama_cpp"].items():
        print("llama_cpp", k, v if isinstance(v, str) else {x: y for x, y in v.items() if x != "tensor_types"})
    if "tokenizer" in figures:
        print("tokenizer mismatches:", len(figures["tokenizer"]["mismatches"]))


if __name__ == "__main__":
    main()
