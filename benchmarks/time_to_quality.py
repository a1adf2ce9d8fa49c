"""Time to quality: bits per byte on held-out documents after a fixed training time.

Data: books.jsonl.zst then enwiki.jsonl.zst (../shared/data/pretrain), in file order. A book
is cut into parts of about --book-part-chars characters at paragraph breaks (the parts
concatenate back to the book), so that books as well as articles fall in both held-out sets.
Of that document list, every 50th (the 50th, 100th, ...) is the TEST split and every 50th + 25
(the 25th, 75th, ...) the DEV split; the rest is training data. The 32k BPE is trained on
the training documents only; both systems see the same token stream.

Choices are made on dev and the test split is reported:
- fmforge: `fmforge.train.trainer.train` with its own time budget counting compilation. Each
  --recipe runs at seed 0 (train.seed); the lowest dev bits/byte wins, and that run is the
  chosen recipe's first repeat, seeds 1..N-1 follow (the same protocol as the peer's rates).
  Each recipe first takes three steps to fill the compile cache, as the peer's is filled.
- nanoGPT (its own model.py from --nanogpt, not committed): AdamW (weight decay 0.1,
  betas 0.9/0.95, clip 1.0), batch 32 x 1024, bf16 autocast, torch.compile, linear warm-up
  then cosine to lr/10 over the steps that fit in --budget seconds (estimated from the
  throughput after the compiled first steps, re-estimated every 10 steps; the time counts
  compilation, as fmforge's budget does). Its compile cache is warmed once before the sweep
  so that no learning rate pays for the cold compile. Each --nanogpt-lrs value runs at seed
  0; the lowest dev bits/byte wins; that run is the chosen rate's first repeat and
  seeds 1..N-1 follow (--fresh-repeats: N new seeds instead; a bias from reusing the
  selected run can only favour the peer).
- modded-nanogpt (--modded PATH: a speedrun record's training log, whose head is its
  train_gpt.py, or the train_gpt.py itself; the 2025-01-04 SoftCap record, FlexAttention with
  document masking, U-net skips, value embeddings, logit softcap, Muon + Adam): their script,
  patched by benchmarks/modded_peer.py into --work, runs as one rank on one device on the same
  training tokens (our train shards in their .bin format, documents in an order drawn from the
  seed, our document-boundary token where theirs is 50256), 32 x 1024 tokens a step as one
  flat sequence, their step-based schedules (cooldown, sliding-window warm-up) over the steps
  that fit in --budget seconds with compilation: its compile cache is warmed once, then a
  short calibration run measures the compilation and the seconds a step, and each run's own
  timing plans the next. Every learning rate of theirs (tuned for 8 x 64k tokens a step) is
  multiplied by one factor: each --modded-lr-scales value runs at seed 0, the lowest dev
  bits/byte wins, and seeds 1..N-1 follow, as for nanoGPT. Their model is scored by
  rebuilding it from the script's definitions with the saved weights, each window its own
  sequence (the window's tokens a multiple of their 128-token attention block).
Every run is scored on dev and test by the same code (fmforge.eval.heldout.score_docs): each
document on its own, every token predicted, nats summed over its UTF-8 bytes. The result
(benchmarks/record.py) holds every run and, per system, the mean, min and max of test
bits/byte over the chosen configuration's runs; it is rewritten after each run. `--resume`
continues an unfinished file (a run cut off with its device session): the same arguments,
commit, peers' code, data and GPU, or it is refused; its finished runs are kept (marked
"resumed") and the choices are made again from them, so the rest runs as it would have; a
system's compile warm-up runs only before its first run that is not kept.

    python benchmarks/time_to_quality.py --nanogpt PATH --recipe recipes/h200-60s.yaml
    python benchmarks/time_to_quality.py --device cpu --tiny --nanogpt PATH --recipe R  # smoke run
    python benchmarks/time_to_quality.py ... --modded RECORD.txt  # with the modded-nanogpt peer
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from record import provenance, write_result  # noqa: E402  (benchmarks/record.py)

SOURCES = ("books", "enwiki")
SPLITS = ("dev", "test")
# --tiny: a data subset, a small vocabulary and model shapes a CPU trains in a second
TINY = {"book_parts": 60, "wiki_docs": 140, "part_chars": 2048, "vocab": 512, "budget": 1.5,
        "nanogpt": {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "batch": 4, "warmup": 2, "sync": 2},
        "fmforge": ["model.d_model=64", "model.n_layers=4", "model.n_heads=2", "model.n_kv_heads=null",
                    "model.ffn_dim=128", "model.context_length=64", "train.micro_batch=4",
                    "train.global_batch_tokens=null", "train.max_steps=null", "train.max_tokens=null",
                    "train.warmup_steps=2", "train.eval_every=0", "train.checkpoint_every_s=0"]}
FULL_NANOGPT = {"block_size": 1024, "batch": 32, "warmup": 30, "sync": 10}


def read_jsonl_zst(path: Path):
    """The "text" of each line, streamed (--tiny stops early)."""
    import zstandard

    with open(path, "rb") as f:
        for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8"):
            if line.strip():
                yield json.loads(line)["text"]


def cut(text: str, size: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive parts of at least `size` characters, each ending after a
    blank line (the last: at the end of the text)."""
    parts, a = [], 0
    while a < len(text):
        b = text.find("\n\n", a + size)
        b = len(text) if b < 0 else b + 2
        parts.append((a, b))
        a = b
    return parts


def split_of(position: int) -> str:
    n = position + 1
    return "test" if n % 50 == 0 else "dev" if n % 50 == 25 else "train"


def documents(data: Path, part_chars: int, tiny: bool) -> list[dict]:
    """The document list: book parts, then articles; each {source, doc, start, end, text}."""
    docs = []
    for d, book in enumerate(read_jsonl_zst(data / "books.jsonl.zst")):
        for a, b in cut(book, part_chars):
            docs.append({"source": "books", "doc": d, "start": a, "end": b, "text": book[a:b]})
        if tiny and len(docs) >= TINY["book_parts"]:
            del docs[TINY["book_parts"]:]
            break
    for d, art in enumerate(read_jsonl_zst(data / "enwiki.jsonl.zst")):
        if tiny and d == TINY["wiki_docs"]:
            break
        docs.append({"source": "enwiki", "doc": d, "start": 0, "end": len(art), "text": art})
    return docs


def prepare(data: Path, work: Path, vocab: int, part_chars: int, tiny: bool) -> dict:
    """Token shards train/dev/test under work/shards and what they hold; reused when the same
    inputs and settings prepared them before (work/prepared.json)."""
    from fmforge.config import TokenizerConfig
    from fmforge.tokenizer.bpe import EOT, train_bpe
    from fmforge.tokenizer.shards import write_shard

    files = [data / f"{s}.jsonl.zst" for s in SOURCES]
    key = json.dumps([hashlib.sha1(f.read_bytes()).hexdigest() for f in files] + [vocab, part_chars, tiny, 1])
    stamp = work / "prepared.json"
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if old.get("key") == key:
            return {**old["info"], "reused_from": str(stamp)}
    t0 = time.perf_counter()
    docs = documents(data, part_chars, tiny)
    for i, d in enumerate(docs):
        d["position"] = i + 1
    by = {s: [d for d in docs if split_of(d["position"] - 1) == s] for s in ("train", *SPLITS)}
    for s in SPLITS:
        missing = [src for src in SOURCES if not any(d["source"] == src for d in by[s])]
        if missing:
            sys.exit(f"error: the {s} split has no {', '.join(missing)} documents ({len(docs)} documents in all): "
                     "use more data or smaller --book-part-chars")
    tok = train_bpe((d["text"] for d in by["train"]), TokenizerConfig(vocab_size=vocab), work / "tokenizer")
    t_tok = time.perf_counter() - t0
    eot, shards = tok.token_to_id(EOT), work / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    shards.mkdir(parents=True)
    info = {"documents": len(docs), "book_part_chars": part_chars, "tiny": tiny,
            "rule": "position p (1-based) in books' parts then articles: test if p % 50 == 0, dev if p % 50 == 25"}
    for s, ds in by.items():
        encs = tok.encode_batch_fast([d["text"] for d in ds], add_special_tokens=False)
        ids = [np.array([eot] + e.ids, dtype=np.uint32) for e in encs]
        nbytes = [len(d["text"].encode()) for d in ds]
        write_shard(shards / f"{s}-00000.bin", ids, nbytes, tok.get_vocab_size())
        info[s] = {"docs": len(ds), "bytes": sum(nbytes), "tokens": sum(len(i) for i in ids),
                   "by_source": {src: sum(d["source"] == src for d in ds) for src in SOURCES}}
        if s != "train":
            info[s]["documents"] = [{**{k: d[k] for k in ("position", "source", "doc", "start", "end")},
                                     "sha1": hashlib.sha1(d["text"].encode()).hexdigest()} for d in ds]
    info.update(vocab=tok.get_vocab_size(), tokenizer_s=t_tok, prepare_s=time.perf_counter() - t0)
    tmp = stamp.with_name(".prepared.json.tmp")
    tmp.write_text(json.dumps({"key": key, "info": info}))
    tmp.replace(stamp)
    return info


def score(model_fn, shards: Path, context: int, device) -> dict:
    """{dev: {...}, test: {...}}: docs, tokens, bytes, loss (nats/token), bpb of each split."""
    import torch

    from fmforge.eval.heldout import iter_docs, score_docs
    from fmforge.tokenizer.shards import open_split

    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    out = {}
    for s in SPLITS:
        r = score_docs(model_fn, iter_docs(open_split(shards, s)), context, device, batch_size=16, autocast=amp)
        out[s] = {"docs": r.docs, "tokens": r.tokens, "bytes": r.bytes, "loss": r.loss, "bpb": r.bpb}
    return out


def run_nanogpt(a, shards: Path, vocab: int, lr: float, seed: int, device, warm_only: bool = False) -> dict:
    """One nanoGPT run (see the module doc): trains for a.budget seconds, scores dev and test."""
    import torch
    import torch.nn.functional as F

    from fmforge.tokenizer.shards import open_split
    from fmforge.train.loader import TokenLoader

    if a.nanogpt not in sys.path:
        sys.path.insert(0, a.nanogpt)
    from model import GPT, GPTConfig

    S = {**FULL_NANOGPT, **dict(zip(("n_layer", "n_head", "n_embd"), a.nanogpt_shape))}
    S = {**S, **TINY["nanogpt"]} if a.tiny else S
    cuda, T, B = device.type == "cuda", S["block_size"], S["batch"]
    torch._dynamo.reset()  # each run compiles afresh (from the warm cache), and never hits the recompile limit
    torch.manual_seed(seed)
    t_build = time.perf_counter()
    cfg = GPTConfig(block_size=T, vocab_size=(vocab + 63) // 64 * 64, n_layer=S["n_layer"], n_head=S["n_head"],
                    n_embd=S["n_embd"], dropout=0.0, bias=False)
    raw = GPT(cfg).to(device)
    opt = raw.configure_optimizers(0.1, lr, (0.9, 0.95), device.type)
    model = torch.compile(raw) if cuda else raw
    loader = TokenLoader(open_split(shards, "train"), T, B, seed=seed)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    warmup, sync = S["warmup"], S["sync"]
    skip = 2 if cuda else 1  # steps that compile / warm caches, left out of the throughput estimate
    planned = None  # steps that fit in the budget, once estimated
    curve, it, t_skip, t0 = [], 0, None, time.perf_counter()
    while True:
        if it < warmup:
            lr_now = lr * (it + 1) / warmup
        else:
            p = min(1.0, (it - warmup) / max(1, (planned or 10**9) - warmup))
            lr_now = lr / 10 + 0.5 * (lr - lr / 10) * (1 + math.cos(math.pi * p))
        for g in opt.param_groups:
            g["lr"] = lr_now
        x, y = loader.next_batch()
        if cuda:  # as nanoGPT's train.py: pinned, so the copy never waits for the queued steps
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with amp:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(raw.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        it += 1
        if warm_only:
            del raw, opt, model
            return {}
        if it <= skip or it % sync == 0:  # reading the loss waits for the GPU: time is measured here only
            curve.append((it, loss.item()))
            now = time.perf_counter() - t0
            if it == skip:
                t_skip = now
            elif t_skip is not None:
                planned = it + int((a.budget - now) / ((now - t_skip) / (it - skip)))
            if now >= a.budget:
                break
        if planned is not None and it >= planned:
            break
    if curve[-1][0] != it:
        curve.append((it, loss.item()))
    if cuda:
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    wall = time.perf_counter() - t_build
    raw.eval()

    class Scored(torch.nn.Module):  # nanoGPT returns every position's logits only when given targets
        def forward(self, x, y, reduction="sum"):
            logits = raw(x, torch.zeros_like(x))[0]
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1),
                                   ignore_index=-100, reduction=reduction)

    val = score(Scored(), shards, T, device)
    n_params = sum(p.numel() for p in raw.parameters())
    del raw, opt, model
    if cuda:
        torch.cuda.empty_cache()
    return {"system": "nanogpt", "lr": lr, "seed": seed, "shape": S, "params": n_params, "train_s": train_s,
            "wall_s": wall, "first_steps_s": t_skip, "steps": it, "tokens": it * B * T,
            "final_train_loss": curve[-1][1], "loss_curve": curve, **val}


def run_fmforge(a, recipe_path: str, seed: int, shards: Path, work: Path, device, warm_only: bool = False) -> dict:
    """One fmforge run: trains for the recipe's time budget, scores dev and test. warm_only:
    three steps, to fill the compile cache as the peer's is filled (nothing scored)."""
    import torch

    from fmforge.config import load_recipe
    from fmforge.model.weights import load_model
    from fmforge.train.trainer import train

    sets = [f"train.seed={seed}", f"train.device={device}"]
    if a.tiny:
        sets += TINY["fmforge"] + [f"train.time_budget_s={a.budget}"]
    if warm_only:
        sets += ["train.max_steps=3", "train.max_tokens=null", "train.time_budget_s=null"]
    recipe = load_recipe(recipe_path, sets)
    out = work / f"fmforge-{Path(recipe_path).stem}-{'warm' if warm_only else f'seed{seed}'}"
    shutil.rmtree(out, ignore_errors=True)  # a scratch run of this script, never resumed
    torch._dynamo.reset()
    t0 = time.perf_counter()
    res = train(recipe, shards, out, verbose=not a.tiny and not warm_only)
    wall = time.perf_counter() - t0
    if warm_only:
        return {}
    steps = [json.loads(line) for line in open(out / "metrics.jsonl") if '"loss"' in line]
    skip = 2 if recipe.train.compile != "off" and device.type == "cuda" else 1  # as the peers' first_steps_s
    first_steps_s = next((r["elapsed_s"] for r in steps if r["step"] == skip), None)
    model = load_model(out, device)
    val = score(model, shards, model.cfg.context_length, device)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"system": "fmforge", "recipe": recipe_path, "seed": seed, "params": res.params,
            "time_budget_s": recipe.train.time_budget_s, "train_s": res.seconds, "wall_s": wall,
            "first_steps_s": first_steps_s, "steps": res.steps,
            "tokens": res.tokens, "mfu": res.mfu, "final_train_loss": res.final_loss, **val}


def run_modded_peer(a, shards: Path, info: dict, device, work: Path, runs, choices, reported, timing,
                    record, attempt, ok, warmups) -> None:
    """The modded-nanogpt peer (see the module doc): compile warm-up, calibration, the
    --modded-lr-scales sweep at seed 0 on dev, seeds 1..N-1 of the best factor."""
    import hashlib

    from tokenizers import Tokenizer

    from fmforge.tokenizer.bpe import EOT
    from modded_peer import ModdedPeer

    sep = Tokenizer.from_file(str(work / "tokenizer" / "tokenizer.json")).token_to_id(EOT)
    timing["modded_source_sha1"] = hashlib.sha1(Path(a.modded).read_bytes()).hexdigest()
    try:
        peer = ModdedPeer(a.modded, work, shards, info["vocab"], sep, device, a.budget, a.tiny)
    except Exception as e:  # the other systems' figures stay
        import traceback

        traceback.print_exc()
        choices["modded_nanogpt"] = {"error": repr(e)}
        record()
        return

    def warm_modded() -> None:  # before its first run that a --resume does not keep
        t = time.perf_counter()  # warm the compile cache: no swept factor pays for the cold compile
        warm = peer.warm()
        timing["modded_compile_warmup_s"] = time.perf_counter() - t
        timing["modded_profile"] = warm["profile"]  # where a step of theirs goes (kernels by kind)
        timing["modded_calibration"] = peer.calibrate()
        record()

    warmups["modded_nanogpt"] = warm_modded
    for scale in a.modded_lr_scales:
        record(attempt("sweep", peer.run, scale, 0, score, system="modded_nanogpt", lr_scale=scale, seed=0))
    swept = {r["lr_scale"]: r["dev"]["bpb"] for r in runs if ok(r, system="modded_nanogpt", role="sweep")}
    if not swept:
        return
    scale = min(swept, key=swept.get)
    choices["modded_nanogpt"] = {"by": "dev bpb at seed 0", "dev_bpb": swept, "chosen_lr_scale": scale,
                                 "at_edge_of_sweep": len(swept) > 1 and scale in (min(swept), max(swept))}
    seeds = range(1, a.repeats + 1) if a.fresh_repeats else range(1, a.repeats)
    for seed in seeds:
        record(attempt("repeat", peer.run, scale, seed, score, system="modded_nanogpt", lr_scale=scale, seed=seed))
    mine = [r for r in runs if ok(r, system="modded_nanogpt", lr_scale=scale) and (r["role"] == "repeat" or
                                                                                 not a.fresh_repeats)]
    reported["modded_nanogpt"] = summary(mine, {"lr_scale": scale, "sweep_run_reused": not a.fresh_repeats})


def sources(a) -> dict:
    """sha1 of the peers' code a run reads (nanoGPT's model.py, the modded record)."""
    import hashlib

    files = {"nanogpt_model_py": Path(a.nanogpt) / "model.py" if a.nanogpt else None,
             "modded_record": Path(a.modded) if a.modded else None}
    return {k: hashlib.sha1(f.read_bytes()).hexdigest() if f else None for k, f in files.items()}


RUN_KEY = ("system", "recipe", "lr", "lr_scale", "seed")  # what a run ran, with its role


def run_key(role: str, run: dict) -> tuple:
    return (role, *(run.get(k) for k in RUN_KEY))


def load_earlier(a, header: dict, ap) -> dict:
    """The unfinished result file --resume continues: refused (argparse error) unless it was
    written by the same commit (and dirty flag) with the same settings and peers' code."""
    if not a.out or not Path(a.out).is_file():
        ap.error("--resume needs --out naming the result file to continue")
    try:
        earlier = json.loads(Path(a.out).read_text())
    except ValueError as e:
        ap.error(f"--resume: {a.out} is not a result file ({e})")
    if earlier.get("benchmark") != "time_to_quality":
        ap.error(f"--resume: {a.out} is not a time_to_quality result")
    ignore = {"out", "resume", "work", "data", "nanogpt", "modded"}  # paths may differ between machines
    was, now = earlier.get("args", {}), header["args"]
    differ = sorted(k for k in set(was) | set(now) if k not in ignore and was.get(k) != json.loads(json.dumps(now.get(k))))
    if differ:
        ap.error(f"--resume: {a.out} was run with other settings ({', '.join(differ)}); use the same arguments")
    for k in ("commit", "dirty", "sources"):
        if earlier.get(k) != header[k]:
            ap.error(f"--resume: {a.out} has {k} {earlier.get(k)!r}, this run {header[k]!r}; start a new --out")
    return earlier


def stats(values: list[float]) -> dict:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "n": len(values),
            "values": values} if values else {"n": 0}


def summary(runs: list[dict], chosen: dict) -> dict:
    """The reported figures of one system: test and dev bits/byte, and the training time of the
    same runs, with how many of them trained past the budget (a figure a reader should discount)
    and the part of it spent before the first measured step (compilation, warm-up)."""
    return {"split": "test", **chosen, "test_bpb": stats([r["test"]["bpb"] for r in runs]),
            "dev_bpb": stats([r["dev"]["bpb"] for r in runs]), "seeds": [r["seed"] for r in runs],
            "train_s": stats([r["train_s"] for r in runs]),
            "first_steps_s": stats([r["first_steps_s"] for r in runs if r.get("first_steps_s") is not None]),
            "over_budget_runs": sum(bool(r.get("over_budget")) for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pretrain"))
    ap.add_argument("--nanogpt", default=None, help="folder with nanoGPT's model.py (no peer if absent)")
    ap.add_argument("--recipe", action="append", default=[], help="an fmforge recipe (repeatable); best on dev wins")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the chosen recipe and of the chosen nanoGPT rate")
    ap.add_argument("--budget", type=float, default=None, help="nanoGPT's seconds of training, compilation "
                    "included (default 60; --tiny 1.5, which also sets the recipes' train.time_budget_s)")
    ap.add_argument("--nanogpt-lrs", default="3e-4,6e-4,1.2e-3",
                    help="the learning rates swept on dev (2026-12-07: 6e-4 beat 1.2e-3 and 2.4e-3, at the low edge)")
    ap.add_argument("--nanogpt-shape", default="12,12,768", help="n_layer,n_head,n_embd (default: GPT-2 124M)")
    ap.add_argument("--modded", default=None, help="a modded-nanogpt record: its log (train_gpt.py at the head) "
                    "or train_gpt.py (no such peer if absent)")
    ap.add_argument("--modded-lr-scales", default="0.25,0.5,1", help="factors on all of the record's learning "
                    "rates, swept on dev (theirs were tuned for 16x the tokens a step; fmforge's Muon rate at "
                    "32k tokens is 0.4x theirs)")
    ap.add_argument("--fresh-repeats", action="store_true", help="do not reuse the sweep's run as a repeat")
    ap.add_argument("--book-part-chars", type=int, default=None, help="book part size (default 65536; --tiny 2048)")
    ap.add_argument("--vocab", type=int, default=None, help="BPE vocabulary (default 32768; --tiny 512)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="data subset, tiny models and budget (a smoke run)")
    ap.add_argument("--work", default="/tmp/ttq", help="scratch: shards (reused when the same), runs")
    ap.add_argument("--prepare-only", action="store_true", help="write the shards to --work and stop")
    ap.add_argument("--out", default=None, help="result file (default benchmarks/results/time_to_quality-DATE.json)")
    ap.add_argument("--resume", action="store_true", help="continue the unfinished --out file: its finished runs "
                    "are kept, the rest run (same arguments, commit, GPU and data, else refused)")
    a = ap.parse_args()
    try:
        a.nanogpt_lrs = [float(x) for x in a.nanogpt_lrs.split(",") if x.strip()]
        a.nanogpt_shape = [int(x) for x in a.nanogpt_shape.split(",")]
        a.modded_lr_scales = [float(x) for x in a.modded_lr_scales.split(",") if x.strip()]
    except ValueError as e:
        ap.error(f"--nanogpt-lrs / --nanogpt-shape / --modded-lr-scales: {e}")
    if not a.modded_lr_scales or min(a.modded_lr_scales) <= 0:
        ap.error("--modded-lr-scales needs positive factors")
    if not a.nanogpt_lrs or min(a.nanogpt_lrs) <= 0 or len(a.nanogpt_shape) != 3 or a.repeats < 1:
        ap.error("--nanogpt-lrs needs positive rates, --nanogpt-shape three integers, --repeats >= 1")
    if a.nanogpt and not (Path(a.nanogpt) / "model.py").is_file():
        ap.error(f"--nanogpt {a.nanogpt}: no model.py there (nanoGPT's model.py)")
    if a.modded:  # a record this adapter cannot patch stops here, before any work
        from modded_peer import PatchError, patch, record_source

        if not Path(a.modded).is_file():
            ap.error(f"--modded {a.modded}: no such file")
        try:
            patch(record_source(a.modded), a.modded)
        except (PatchError, UnicodeDecodeError) as e:
            ap.error(f"--modded: {e}")
        a.modded = str(Path(a.modded).resolve())
    for f in [Path(a.data) / f"{s}.jsonl.zst" for s in SOURCES] + [Path(r) for r in a.recipe]:
        if not f.is_file():
            ap.error(f"{f}: no such file")
    a.budget = a.budget or (TINY["budget"] if a.tiny else 60.0)
    a.vocab = a.vocab or (TINY["vocab"] if a.tiny else 32768)
    a.book_part_chars = a.book_part_chars or (TINY["part_chars"] if a.tiny else 65536)
    a.nanogpt = str(Path(a.nanogpt).resolve()) if a.nanogpt else None
    header, t_start = provenance(a), time.perf_counter()
    header["sources"] = sources(a)
    earlier = load_earlier(a, header, ap) if a.resume else None
    if earlier is not None and earlier.get("complete"):
        print(f"{a.out} is complete: nothing to resume")
        return
    import torch

    device = torch.device(a.device)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    info = prepare(Path(a.data), work, a.vocab, a.book_part_chars, a.tiny)
    print("data: " + ", ".join(f"{s} {info[s]['docs']} docs {info[s]['bytes']:,} bytes" for s in ("train", *SPLITS)),
          flush=True)
    if a.prepare_only:
        return
    runs, choices, reported, timing = [], {}, {}, {}
    prior: dict[tuple, dict] = {}  # --resume: the earlier invocation's finished runs, by what they ran
    if earlier is not None:
        gpu = torch.cuda.get_device_name() if device.type == "cuda" else None
        same = lambda d: {k: v for k, v in json.loads(json.dumps(d, default=str)).items() if k != "reused_from"}  # noqa: E731
        if same(earlier["data"]) != same(info) or earlier["hardware"].get("gpu") != gpu:
            print(f"time_to_quality.py: error: --resume: {a.out} was run on other data or another GPU "
                  f"({earlier['hardware'].get('gpu')} against {gpu}); start a new --out", file=sys.stderr)
            sys.exit(2)
        prior = {run_key(r["role"], r): r for r in earlier["runs"] if "error" not in r}
        header["resumed"] = {"from_date": earlier["date"], "from_argv": earlier["argv"], "earlier_timing":
                             earlier.get("timing", {}), "earlier_header_resumed": earlier.get("resumed")}
        print(f"resuming {a.out}: {len(prior)} finished runs kept", flush=True)
    out = [a.out]

    def record(run: dict | None = None, complete: bool = False) -> None:
        if run is not None:
            runs.append(run)
            what = run.get("recipe") or f"lr {run['lr'] if 'lr' in run else 'x' + str(run.get('lr_scale'))}"
            print(("kept: " if run.get("resumed") else "") + f"{run['system']} {what} seed {run['seed']} ({run['role']}): " +
                  (f"dev {run['dev']['bpb']:.4f} test {run['test']['bpb']:.4f} bpb, {run['steps']} steps, "
                   f"{run['train_s']:.1f} s" if "error" not in run else run["error"]), flush=True)
        out[0] = write_result("time_to_quality", header, {
            "complete": complete, "budget_s": a.budget, "data": info, "choices": choices, "reported": reported,
            "timing": timing, "runs": runs}, out[0])

    warmups: dict[str, object] = {}  # system -> its compile warm-up, run before its first run that is not kept

    def attempt(role: str, fn, *args, **kw) -> dict:
        kept = prior.get(run_key(role, kw))
        if kept is not None:
            return {**kept, "resumed": True}
        try:
            warm = warmups.pop(kw["system"], None)
            if warm is not None:
                warm()
            run = {"role": role, **fn(*args)}
            if "train_s" in run:  # every system's, as the modded peer's own record already says
                run["over_budget"] = run["train_s"] > a.budget
            return run
        except Exception as e:  # one failing run must not lose the others' figures
            import traceback

            traceback.print_exc()
            return {"role": role, "error": repr(e), **kw}

    shards = work / "shards"
    ok = lambda r, **kw: "error" not in r and all(r.get(k) == v for k, v in kw.items())  # noqa: E731
    # Recipes as the peer's rates: each screened at seed 0 on dev, the best gets seeds 1..N-1.
    def warm_fmforge() -> None:  # warm the compile cache: no recipe's run pays for the cold compile
        t = time.perf_counter()
        for rp in a.recipe:
            run_fmforge(a, rp, 0, shards, work, device, warm_only=True)
        timing["fmforge_compile_warmup_s"] = time.perf_counter() - t

    warmups["fmforge"] = warm_fmforge
    for rp in a.recipe:
        record(attempt("screen", run_fmforge, a, rp, 0, shards, work, device, system="fmforge", recipe=rp, seed=0))
    screened = {r["recipe"]: r["dev"]["bpb"] for r in runs if ok(r, system="fmforge", role="screen")}
    if screened:
        best = min(screened, key=screened.get)
        choices["fmforge"] = {"by": "dev bpb at seed 0", "dev_bpb": screened, "chosen": best}
        for seed in range(1, a.repeats):
            record(attempt("repeat", run_fmforge, a, best, seed, shards, work, device,
                           system="fmforge", recipe=best, seed=seed))
        reported["fmforge"] = summary([r for r in runs if ok(r, system="fmforge", recipe=best)], {"recipe": best})
    if a.nanogpt:
        def warm_nanogpt() -> None:  # warm the compile cache: no swept rate pays for the cold compile
            t = time.perf_counter()
            run_nanogpt(a, shards, info["vocab"], a.nanogpt_lrs[0], 0, device, warm_only=True)
            timing["nanogpt_compile_warmup_s"] = time.perf_counter() - t

        warmups["nanogpt"] = warm_nanogpt
        for lr in a.nanogpt_lrs:
            record(attempt("sweep", run_nanogpt, a, shards, info["vocab"], lr, 0, device,
                           system="nanogpt", lr=lr, seed=0))
        swept = {r["lr"]: r["dev"]["bpb"] for r in runs if ok(r, system="nanogpt", role="sweep")}
        if swept:
            lr = min(swept, key=swept.get)
            choices["nanogpt"] = {"by": "dev bpb at seed 0", "dev_bpb": swept, "chosen_lr": lr,
                                  "at_edge_of_sweep": len(swept) > 1 and lr in (min(swept), max(swept))}
            seeds = range(1, a.repeats + 1) if a.fresh_repeats else range(1, a.repeats)
            for seed in seeds:
                record(attempt("repeat", run_nanogpt, a, shards, info["vocab"], lr, seed, device,
                               system="nanogpt", lr=lr, seed=seed))
            mine = [r for r in runs if ok(r, system="nanogpt", lr=lr) and (r["role"] == "repeat" or
                                                                          not a.fresh_repeats)]
            reported["nanogpt"] = summary(mine, {"lr": lr, "sweep_run_reused": not a.fresh_repeats})
    if a.modded:
        run_modded_peer(a, shards, info, device, work, runs, choices, reported, timing, record, attempt, ok, warmups)
    timing["total_s"] = time.perf_counter() - t_start
    record(complete=True)
    for s, r in reported.items():
        t = r["test_bpb"]
        what = r.get("recipe") or (f"lr {r['lr']}" if "lr" in r else f"lr x{r.get('lr_scale')}")
        print(f"{s}: test {t['mean']:.4f} bpb (min {t['min']:.4f}, max {t['max']:.4f}, {t['n']} runs) {what}",
              flush=True)
    print(f"wrote {out[0]}")


if __name__ == "__main__":
    main()
