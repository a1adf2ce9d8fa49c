"""benchmarks/time_to_quality.py, tiny on the CPU, on a corpus of our own and a small
nanoGPT-shaped model.py written here: the held-out splits follow the rule and hold both
sources, no held-out text is in the training stream, choices follow dev, and the reported
test figures are the mean/min/max of the chosen configuration's repeats."""
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard

ROOT = Path(__file__).resolve().parents[1]

# The interface nanoGPT's model.py offers to the benchmark: GPTConfig, GPT(config),
# configure_optimizers(weight_decay, learning_rate, betas, device_type), and
# forward(idx, targets) -> (logits of every position, mean loss ignoring -1).
FAKE_MODEL = '''
from dataclasses import dataclass
import torch
import torch.nn as nn
import torch.nn.functional as F

@dataclass
class GPTConfig:
    block_size: int = 64
    vocab_size: int = 512
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = False

class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h = c.n_head
        self.ln1, self.ln2 = nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
        self.qkv, self.proj = nn.Linear(c.n_embd, 3 * c.n_embd), nn.Linear(c.n_embd, c.n_embd)
        self.mlp = nn.Sequential(nn.Linear(c.n_embd, 4 * c.n_embd), nn.GELU(), nn.Linear(4 * c.n_embd, c.n_embd))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in self.qkv(self.ln1(x)).split(C, 2))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(a)
        return x + self.mlp(self.ln2(x))

class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        x = self.ln_f(x)
        if targets is None:
            return x[:, [-1]] @ self.wte.weight.T, None
        logits = x @ self.wte.weight.T
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        decay = [p for p in self.parameters() if p.dim() >= 2]
        rest = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)
'''


def _paragraph(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(30, 80))) + ".\n\n"


def _corpus(folder: Path) -> dict[str, list[str]]:
    """2 books of ~56k characters (about 27 parts of 2,048 each) and 120 short articles."""
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(400)]
    books = []
    for _ in range(2):
        b = ""
        while len(b) < 56_000:
            b += _paragraph(rng, words)
        books.append(b)
    wiki = ["".join(_paragraph(rng, words) for _ in range(rng.randint(2, 8))) for _ in range(120)]
    for name, texts in (("books", books), ("enwiki", wiki)):
        raw = "".join(json.dumps({"text": t, "meta": {}}) + "\n" for t in texts).encode()
        (folder / f"{name}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    return {"books": books, "enwiki": wiki}


@pytest.mark.slow  # ~25 s of CPU time: under 30 s alone, more on a shared machine
@pytest.mark.timeout(400)
def test_time_to_quality_tiny_cpu(tmp_path):
    data, ng, work = tmp_path / "data", tmp_path / "nanogpt", tmp_path / "work"
    data.mkdir(), ng.mkdir()
    (ng / "model.py").write_text(FAKE_MODEL)
    texts = _corpus(data)
    out = tmp_path / "ttq.json"
    recipes = ["recipes/h200-60s.yaml", "recipes/h200-60s-adamw.yaml"]
    lrs = [3e-3, 3e-5]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    base = [sys.executable, "benchmarks/time_to_quality.py", "--device", "cpu", "--tiny", "--data", str(data),
            "--nanogpt", str(ng), "--work", str(work), "--recipe", recipes[0], "--recipe", recipes[1],
            "--repeats", "2", "--nanogpt-lrs", ",".join(map(str, lrs)), "--budget", "1"]
    r = subprocess.run(base + ["--out", str(out)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=380)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["benchmark"] == "time_to_quality" and res["commit"] and res["complete"] is True
    info = res["data"]

    # splits: the rule, both sources in each, offsets that give back the very text
    n_docs = info["documents"]
    assert 120 + 50 <= n_docs <= 120 + 2 * 56_900 // 2048  # 2 books in parts of >= 2,048 characters, 120 articles
    held = {s: info[s]["documents"] for s in ("dev", "test")}
    assert [d["position"] for d in held["test"]] == list(range(50, n_docs + 1, 50))
    assert [d["position"] for d in held["dev"]] == list(range(25, n_docs + 1, 50))
    for s, docs in held.items():
        assert {d["source"] for d in docs} == {"books", "enwiki"}, s
        for d in docs:
            piece = texts[d["source"]][d["doc"]][d["start"]:d["end"]]
            assert hashlib.sha1(piece.encode()).hexdigest() == d["sha1"]
        assert info[s]["bytes"] == sum(len(texts[d["source"]][d["doc"]][d["start"]:d["end"]].encode()) for d in docs)
    spans = [(d["source"], d["doc"], d["start"], d["end"]) for docs in held.values() for d in docs]
    for i, a in enumerate(spans):  # dev and test never overlap
        assert not any(a[:2] == b[:2] and a[2] < b[3] and b[2] < a[3] for b in spans[i + 1:])
    total = sum(len(t.encode()) for ts in texts.values() for t in ts)
    assert info["train"]["bytes"] + info["dev"]["bytes"] + info["test"]["bytes"] == total  # every byte, once

    # no held-out text in the training stream (decoded with the benchmark's tokenizer)
    from tokenizers import Tokenizer

    from fmforge.tokenizer.shards import open_split

    (shard,) = open_split(work / "shards", "train")
    assert int(np.asarray(shard.doc_bytes).sum()) == info["train"]["bytes"] and len(shard) == info["train"]["docs"]
    stream = Tokenizer.from_file(str(work / "tokenizer" / "tokenizer.json")).decode(
        np.asarray(shard.tokens).tolist(), skip_special_tokens=True)
    assert texts["enwiki"][0][:300] in stream  # the decoding works: a training article is there
    for d in held["dev"] + held["test"]:
        assert texts[d["source"]][d["doc"]][d["start"]:d["end"]][:300] not in stream

    # both systems' compile caches were warmed before any scored run; a warm-up is not a run
    assert res["timing"]["fmforge_compile_warmup_s"] > 0 and res["timing"]["nanogpt_compile_warmup_s"] > 0
    assert sorted(p.name for p in work.glob("fmforge-*-warm")) == sorted(f"fmforge-{Path(rp).stem}-warm" for rp in recipes)

    # every run scored on both splits, the same documents for both systems
    runs = res["runs"]
    assert not [x for x in runs if "error" in x]
    for x in runs:
        for s in ("dev", "test"):
            assert (x[s]["docs"], x[s]["bytes"]) == (info[s]["docs"], info[s]["bytes"])
            assert 0 < x[s]["bpb"] < 20
    fm = [x for x in runs if x["system"] == "fmforge"]
    screen = {x["recipe"]: x for x in fm if x["role"] == "screen"}
    assert sorted(screen) == sorted(recipes) and all(x["seed"] == 0 for x in screen.values())
    ng_runs = [x for x in runs if x["system"] == "nanogpt"]
    sweep = {x["lr"]: x for x in ng_runs if x["role"] == "sweep"}
    assert sorted(sweep) == sorted(lrs) and all(x["seed"] == 0 for x in sweep.values())
    for x in ng_runs:  # trained for about its budget (the last step ends it), compilation included
        assert x["train_s"] >= 0.5 and x["steps"] >= 1 and x["loss_curve"][-1][0] == x["steps"]

    # choices on dev, figures on test
    best = min(screen, key=lambda rp: screen[rp]["dev"]["bpb"])
    assert res["choices"]["fmforge"]["chosen"] == best
    # only the chosen recipe gets the further seeds
    assert sorted((x["recipe"], x["seed"]) for x in fm) == sorted([(rp, 0) for rp in recipes] + [(best, 1)])
    lr = min(sweep, key=lambda k: sweep[k]["dev"]["bpb"])
    assert res["choices"]["nanogpt"]["chosen_lr"] == lr
    chosen = {"fmforge": [x for x in fm if x["recipe"] == best],
              "nanogpt": [x for x in ng_runs if x["lr"] == lr]}
    for xs in chosen.values():
        assert sorted(x["seed"] for x in xs) == [0, 1]  # the screen's / sweep's run, then seed 1
    for system, xs in chosen.items():
        rep = res["reported"][system]
        assert rep["split"] == "test"
        vals = [x["test"]["bpb"] for x in xs]
        t = rep["test_bpb"]
        assert t["n"] == 2 and t["mean"] == pytest.approx(np.mean(vals))
        assert (t["min"], t["max"]) == (min(vals), max(vals))
        secs = [x["train_s"] for x in xs]
        assert rep["train_s"]["max"] == max(secs)
        assert rep["over_budget_runs"] == sum(x > 1.0 for x in secs) and all("over_budget" in x for x in xs)
        assert all(0 < x["first_steps_s"] <= x["train_s"] for x in xs)  # equal: a loaded machine made one step
        assert rep["first_steps_s"]["n"] == len(xs)

    # --resume: a file cut off after the fmforge runs keeps them as they were and runs the rest
    # (the peer's warm-up, sweep and repeat), and reaches the same choices for fmforge
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps({**res, "complete": False, "runs": fm, "reported": {}, "choices": {}}))
    again = subprocess.run(base + ["--out", str(cut), "--resume"], cwd=ROOT, capture_output=True, text=True,
                           env=env, timeout=380)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    res2 = json.loads(cut.read_text())
    assert res2["complete"] is True and res2["resumed"]["from_date"] == res["date"]
    kept = [x for x in res2["runs"] if x.get("resumed")]
    assert [{k: v for k, v in x.items() if k != "resumed"} for x in kept] == fm
    lr2 = res2["choices"]["nanogpt"]["chosen_lr"]
    assert sorted((x["lr"], x["seed"]) for x in res2["runs"] if not x.get("resumed")) == sorted(
        [(v, 0) for v in lrs] + [(lr2, 1)])
    assert "fmforge_compile_warmup_s" not in res2["timing"] and res2["timing"]["nanogpt_compile_warmup_s"] > 0
    assert res2["choices"]["fmforge"] == res["choices"]["fmforge"]
    assert res2["reported"]["fmforge"] == res["reported"]["fmforge"]
    # other settings than the file's: refused before any work
    other = subprocess.run(base + ["--out", str(cut), "--resume", "--repeats", "3"], cwd=ROOT, capture_output=True,
                           text=True, env=env, timeout=120)
    assert other.returncode == 2 and "other settings (repeats)" in other.stderr, other.stderr


@pytest.mark.parametrize("args, says", [(["--nanogpt", "."], "no model.py"), (["--data", "/nonexistent"], "no such file"),
                                        (["--nanogpt-lrs", "x"], "--nanogpt-lrs"), (["--repeats", "0"], "--repeats"),
                                        (["--modded", "/nonexistent.txt"], "no such file"),
                                        (["--modded-lr-scales", "0"], "--modded-lr-scales")])
def test_time_to_quality_bad_arguments(tmp_path, args, says):
    r = subprocess.run([sys.executable, "benchmarks/time_to_quality.py", "--work", str(tmp_path), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())  # stopped before any work
