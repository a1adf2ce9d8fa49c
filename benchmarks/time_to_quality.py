"""Time to quality on one GPU: bits per byte on held-out documents after 60 s of training.

Data: books.jsonl.zst then enwiki.jsonl.zst from ../shared/data/pretrain, in file order;
every 50th document (the 50th, 100th, ...) is held out. A 32k byte-level BPE is trained
on the training documents and both systems see the same token stream.

- nanoGPT (its own model.py, fetched, not committed): GPT-2 124M, batch 32×1024, AdamW
  6e-4 cosine to 6e-5, bf16, torch.compile, one epoch (as measured for the issue).
- fmforge: `fmforge.train.trainer.train` with each recipe given (`--recipe`, repeatable),
  its time budget counting compilation, as a user would run it.

Both are scored by the same code (fmforge.eval.heldout.score_docs): each held-out document
on its own, every token predicted, nats summed over its UTF-8 bytes.

    python benchmarks/time_to_quality.py --data ../shared/data/pretrain --nanogpt PATH \\
        --recipe recipes/h200-60s.yaml [--recipe ...] --out results.json
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)


def read_jsonl_zst(path: Path) -> list[str]:
    import zstandard

    with open(path, "rb") as f:
        text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")
        return [json.loads(line)["text"] for line in text if line.strip()]


def prepare(data: Path, work: Path, vocab: int) -> dict:
    from fmforge.config import TokenizerConfig
    from fmforge.tokenizer.bpe import EOT, train_bpe
    from fmforge.tokenizer.shards import write_shard

    t0 = time.perf_counter()
    docs = read_jsonl_zst(data / "books.jsonl.zst") + read_jsonl_zst(data / "enwiki.jsonl.zst")
    val_idx = [i for i in range(len(docs)) if (i + 1) % 50 == 0]
    val_set = set(val_idx)
    train_docs = [d for i, d in enumerate(docs) if i not in val_set]
    val_docs = [docs[i] for i in val_idx]
    tok = train_bpe(iter(train_docs), TokenizerConfig(vocab_size=vocab), work / "tokenizer")
    t_tok = time.perf_counter() - t0
    eot = tok.token_to_id(EOT)
    shards = work / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for split, texts in (("train", train_docs), ("val", val_docs)):
        encs = tok.encode_batch_fast(texts, add_special_tokens=False)
        ids = [np.array([eot] + e.ids, dtype=np.uint32) for e in encs]
        write_shard(shards / f"{split}-00000.bin", ids, [len(t.encode()) for t in texts], tok.get_vocab_size())
    return {"docs": len(docs), "train_docs": len(train_docs), "val_docs": len(val_docs),
            "val_bytes": sum(len(t.encode()) for t in val_docs), "tokenizer_s": t_tok,
            "prepare_s": time.perf_counter() - t0, "vocab": tok.get_vocab_size()}


def score(model_fn, shards: Path, context: int) -> dict:
    """val_loss, val_bpb and the size of what was scored (val_docs, val_tokens, val_bytes)."""
    import torch

    from fmforge.eval.heldout import iter_docs, score_docs
    from fmforge.tokenizer.shards import open_split

    res = score_docs(model_fn, iter_docs(open_split(shards, "val")), context, torch.device("cuda"),
                     batch_size=16, autocast=torch.autocast("cuda", dtype=torch.bfloat16))
    return {k if k.startswith("val_") else f"val_{k}": v for k, v in res.to_dict().items()}


def run_nanogpt(nanogpt: str, shards: Path, vocab: int, budget_s: float | None) -> dict:
    """nanoGPT's model and optimizer, one epoch over the training windows (random order)."""
    import torch
    import torch.nn.functional as F

    from fmforge.tokenizer.shards import open_split
    from fmforge.train.loader import TokenLoader

    sys.path.insert(0, nanogpt)
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    t0 = time.perf_counter()
    cfg = GPTConfig(block_size=1024, vocab_size=(vocab + 63) // 64 * 64, n_layer=12, n_head=12, n_embd=768,
                    dropout=0.0, bias=False)
    raw = GPT(cfg).cuda()
    opt = raw.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cuda")
    model = torch.compile(raw)
    loader = TokenLoader(open_split(shards, "train"), 1024, 32, seed=0)
    steps = loader.n_windows // 32
    warmup = max(1, steps // 20)
    losses = []
    for it in range(steps):
        lr = 6e-4 * (it + 1) / warmup if it < warmup else \
            6e-5 + 0.5 * (6e-4 - 6e-5) * (1 + math.cos(math.pi * (it - warmup) / max(1, steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = loader.next_batch()
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(raw.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if budget_s and time.perf_counter() - t0 > budget_s:
            break
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    raw.eval()

    class Scored(torch.nn.Module):  # nanoGPT returns full logits only when given targets
        def forward(self, x, y, reduction="sum"):
            logits = raw(x, torch.zeros_like(x))[0]
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1),
                                   ignore_index=-100, reduction=reduction)

    val = score(Scored(), shards, 1024)
    return {"system": "nanogpt", "recipe": "gpt2-124m adamw 6e-4 cosine, 1 epoch", "wall_s": wall,
            "steps": len(losses), "tokens": len(losses) * 32 * 1024, "final_train_loss": losses[-1], **val}


def run_fmforge(recipe_path: str, shards: Path, work: Path) -> dict:
    import torch

    from fmforge.config import load_recipe
    from fmforge.model.weights import load_model
    from fmforge.train.trainer import train

    recipe = load_recipe(recipe_path)
    out = work / f"fmforge-{Path(recipe_path).stem}"
    t0 = time.perf_counter()
    res = train(recipe, shards, out, verbose=True)
    wall = time.perf_counter() - t0
    model = load_model(out, "cuda")
    val = score(model, shards, model.cfg.context_length)
    del model
    torch.cuda.empty_cache()
    return {"system": "fmforge", "recipe": recipe_path, "wall_s": wall, "train_elapsed_s": res.seconds,
            "steps": res.steps, "tokens": res.tokens, "params": res.params, "mfu": res.mfu,
            "final_train_loss": res.final_loss, **val}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pretrain"))
    ap.add_argument("--nanogpt", default=None, help="folder with nanoGPT's model.py (skip the peer if absent)")
    ap.add_argument("--recipe", action="append", default=[])
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--work", default="/tmp/ttq")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    header = provenance(a)
    import torch  # noqa: F401  (record.write_result reads the GPU through it)

    work = Path(a.work)
    info = prepare(Path(a.data), work, a.vocab)
    print(f"data: {info}", flush=True)
    results = []
    if a.nanogpt:
        r = run_nanogpt(a.nanogpt, work / "shards", info["vocab"], None)
        results.append(r)
        print(f"nanogpt: {r['val_bpb']:.4f} bpb in {r['wall_s']:.1f}s ({r['tokens']:,} tokens)", flush=True)
    for rp in a.recipe:
        try:
            r = run_fmforge(rp, work / "shards", work)
        except Exception as e:  # one failing recipe must not lose the others' figures
            import traceback

            traceback.print_exc()
            results.append({"system": "fmforge", "recipe": rp, "error": repr(e)})
            continue
        results.append(r)
        print(f"fmforge {rp}: {r['val_bpb']:.4f} bpb in {r['wall_s']:.1f}s ({r['tokens']:,} tokens, "
              f"MFU {r['mfu'] or 0:.1%})", flush=True)
    path = write_result("time_to_quality", header, {"data": info, "results": results}, a.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
