"""The modded-nanogpt peer of benchmarks/time_to_quality.py: a speedrun record's train_gpt.py,
run on one device and on this benchmark's data, then scored by the benchmark's own code.

Their code is never copied into this repository. `--modded PATH` names a record's training
log (the 2025-01-04 SoftCap record of KellerJordan/modded-nanogpt, track_1_short, or one like
it: the log starts with the full train_gpt.py, up to the first line made only of '='
characters) or a plain train_gpt.py. `patch` applies explicit text substitutions to that
source; each must match exactly the expected number of times, or `PatchError` names the file
and the pattern. The patched script is written under the benchmark's --work folder and run as
its own process, one rank (RANK=0, WORLD_SIZE=1, a free MASTER_PORT), with:

- our data: the train split's token shards in their .bin format (`write_bin`: a header of 256
  int32, magic 20240520, version 1, the token count, then uint16 ids), every document after
  our document-boundary token (fmforge's shards start each document with it, as their data
  puts 50256 before each document), documents in an order drawn from the run's seed; their
  document masking tests for our boundary id instead of 50256, their vocabulary is ours
  rounded up to a multiple of 128;
- 32,768 tokens a step (fmforge's recipe; nanoGPT's 32 x 1024), one flat sequence;
- their schedules (learning-rate cooldown, sliding-window warm-up) run over `steps`, which a
  calibration run chooses so that the run fits the budget with its compilation: a run of
  `calib_steps` measures the time to step `skip` (compilation) and the seconds a step after it,
  and every finished run measures them again for the next one;
- every learning rate multiplied by one factor (`lr_scale`, swept on dev), torch.manual_seed;
- no validation passes (the benchmark scores afterwards); at the end the weights and the
  timings (`meta.json`: marks taken after a device synchronize) go to the run's folder.

Scoring imports only the definitions part of the patched script (everything before
`class Hyperparameters`, written to its own module, so no training runs), rebuilds GPT with
the trained shape, loads the weights, and scores each window row as its own sequence: the
patched forward returns its softcapped float logits when no targets are given, and `Scored`
takes the summed fp32 cross-entropy, autocast off (their model runs in bf16 by itself).

On the CPU (`--device cpu --tiny`) the same substitutions run with cuda -> cpu, nccl -> gloo,
no torch.compile (as nanoGPT's smoke run) and a tiny width; FlexAttention has no backward on
the CPU, so training there uses `dense_flex_attention` (the same mask, materialised, through
scaled_dot_product_attention, as compiled FlexAttention masks: tests/test_modded_peer.py);
scoring uses FlexAttention itself on both devices (eagerly: see `ModdedPeer.scorer`).
"""
from __future__ import annotations

import gc
import importlib.util
import inspect
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MAGIC, VERSION, HEADER_INTS = 20240520, 1, 256  # their .bin shard header
BLOCK = 128  # their FlexAttention block: sequences are multiples of it
# warm_steps: the compile warm-up, whose steps `profile` (after, up to) are also profiled: where
# their step's time goes (profile.txt / profile.json in work/modded/warm), at no scored run's cost
FULL = {"tokens_per_step": 32 * 1024, "context": 1024, "calib_steps": 50, "warm_steps": 16, "profile": [10, 14],
        "skip": 5, "sync": 25, "safety": 0.98, "timeout_s": 1200}  # timeout: the cold compile's run
TINY = {"tokens_per_step": 2 * BLOCK, "context": BLOCK, "calib_steps": 6, "warm_steps": 3, "profile": [1, 3],
        "skip": 1, "sync": 2, "safety": 0.98, "timeout_s": 300, "heads": 2, "dim": 64}


class PatchError(ValueError):
    """A record whose source does not have what a substitution expects."""


def record_source(path: str | Path) -> str:
    """train_gpt.py's source: a .py as it is, or a record log's head up to (not including)
    its first line made only of '=' characters."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".py":
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line and set(line.strip()) == {"="} and line.strip() == line:
            if i == 0:
                raise PatchError(f"{path}: the log starts with a '=' line, no train_gpt.py before it")
            return "\n".join(lines[:i]) + "\n"
    raise PatchError(f"{path}: no line made only of '=' characters ends a train_gpt.py at the head of this log")


def substitute(text: str, pattern: str, repl: str, count: int, where: str, regex: bool = False) -> str:
    """`text` with `pattern` (literal, or a regex in MULTILINE mode) replaced; it must match
    exactly `count` times, else PatchError naming `where` and the pattern."""
    rx = re.compile(pattern if regex else re.escape(pattern), re.M)
    n = len(rx.findall(text))
    if n != count:
        raise PatchError(f"{where}: pattern {pattern!r} matched {n} times, expected {count} "
                         "(benchmarks/modded_peer.py targets the 2025-01-04 SoftCap record's train_gpt.py)")
    return rx.sub(repl if regex else repl.replace("\\", "\\\\"), text)


def shape_of(source: str, where: str) -> tuple[int, int, int]:
    """(num_layers, num_heads, model_dim) of the record's GPT(...) call."""
    m = re.findall(r"GPT\(vocab_size=\d+, num_layers=(\d+), num_heads=(\d+), model_dim=(\d+)\)", source)
    if len(m) != 1:
        raise PatchError(f"{where}: expected one 'model = GPT(vocab_size=N, num_layers=N, num_heads=N, model_dim=N)'")
    return tuple(int(v) for v in m[0])


# (pattern, replacement, expected count, regex): applied in order to the record's source. On
# CUDA every replacement evaluates to what it replaces (_TTQ_DEVICE == "cuda", ...).
SUBSTITUTIONS = [
    # one device, given by the adapter
    ("device='cuda'", "device=_TTQ_DEVICE", 6, False),
    ("torch.cuda.synchronize()", "_ttq_sync()", 3, False),
    ("model = model.cuda()", "model = model.to(_TTQ_DEVICE)", 1, False),
    ("pin_memory=True", "pin_memory=_TTQ_CUDA", 1, False),
    ("assert torch.cuda.is_available()", "assert torch.cuda.is_available() or not _TTQ_CUDA", 1, False),
    ("torch.cuda.set_device(local_rank)", "_TTQ_CUDA and torch.cuda.set_device(local_rank)", 1, False),
    ("backend='nccl', device_id=torch.device(local_rank)",
     "backend=_TTQ_BACKEND, device_id=torch.device(local_rank) if _TTQ_CUDA else None", 1, False),
    ("device_ids=[local_rank]", "device_ids=[local_rank] if _TTQ_CUDA else None", 1, False),
    ("['nvidia-smi']", "['nvidia-smi' if _TTQ_CUDA else 'true']", 1, False),
    # our data, vocabulary, document separator, shape, seed, tokens a step, steps; no validation
    ("inputs == 50256", "inputs == TTQ['sep']", 1, False),
    (r"GPT\(vocab_size=\d+, num_layers=\d+, num_heads=\d+, model_dim=\d+\)",
     "GPT(vocab_size=TTQ['vocab'], num_layers=TTQ['shape'][0], num_heads=TTQ['shape'][1], "
     "model_dim=TTQ['shape'][2])", 1, True),
    (r"^args = Hyperparameters\(\)\n",
     "args = Hyperparameters()\n"
     "args.train_bin = args.val_bin = TTQ['train_bin']  # ttq: the validation loader is built, never used\n"
     "args.batch_size = args.max_device_batch_size = TTQ['tokens_per_step']\n"
     "args.num_iterations = TTQ['steps']\n"
     "args.val_loss_every = 0\n"
     "args.save_checkpoint = False\n"
     "torch.manual_seed(TTQ['seed'])\n", 1, True),
    (r"^(\s*)if last_step or \(args\.val_loss_every > 0 and step % args\.val_loss_every == 0\):",
     r"\1if False:  # ttq: no validation pass, the benchmark scores the saved weights", 1, True),
    # every learning rate times lr_scale (before the schedulers record the initial rates)
    (r"^optimizers = \[optimizer1, optimizer2\]\n",
     "optimizers = [optimizer1, optimizer2]\n"
     "for _g in [g for o in optimizers for g in o.param_groups]:\n"
     "    _g['lr'] *= TTQ['lr_scale']\n", 1, True),
    # timing, the loss at the marks, weights and meta.json at the end
    (r"^# begin training\n", "_ttq_t0 = time.perf_counter()  # ttq: the budget starts here\n# begin training\n", 1, True),
    ("ddp_model(micro_inputs_train, micro_targets_train, sliding_window_num_blocks).backward()",
     "(_ttq_loss := ddp_model(micro_inputs_train, micro_targets_train, sliding_window_num_blocks)).backward()",
     1, False),
    (r"^(\s*)model\.zero_grad\(set_to_none=True\)\n", r"\1model.zero_grad(set_to_none=True)\n\1_ttq_mark(step + 1)\n",
     1, True),
    (r"^print0\(f'peak memory consumption:.*\n", "_ttq_finish(model, sliding_window_num_blocks)\n", 1, True),
    # attention: FlexAttention (on the CPU while training: the dense stand-in); logits for scoring
    ("from torch.nn.attention.flex_attention import BlockMask, flex_attention\n",
     "from torch.nn.attention.flex_attention import BlockMask, flex_attention\n"
     "_ttq_attention = flex_attention if _TTQ_CUDA else dense_flex_attention\n", 1, False),
    ("= flex_attention(", "= _ttq_attention(", 1, False),
    (r"^(\s*)logits = logits\.float\(\)\n",
     r"\1logits = logits.float()\n\1if targets is None:  # ttq: the benchmark scores these\n\1    return logits\n",
     1, True),
]
DEFS_END = r"^@dataclass\nclass Hyperparameters"  # the definitions part ends here
DEFS_SUBSTITUTIONS = [  # the definitions module does not read sys.argv[0]
    (r"^with open\(sys\.argv\[0\]\) as f:\n\s+code = f\.read\(\).*\n", "code = ''\n", 1, True)]


def dense_flex_attention(q, k, v, block_mask):
    """flex_attention(q, k, v, block_mask=block_mask) without a score_mod, computed densely:
    a full block lets every pair attend, a partial block what its mask_mod allows, any other
    pair is masked; then scaled_dot_product_attention (FlexAttention has no CPU backward)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention.flex_attention import create_mask

    T, S = q.shape[-2], k.shape[-2]
    bq, bk = block_mask.BLOCK_SIZE if isinstance(block_mask.BLOCK_SIZE, tuple) else (block_mask.BLOCK_SIZE,) * 2

    def dense(num, idx):  # ordered (count, indices) -> (b, h, q_blocks, kv_blocks) bool
        if num is None:
            return torch.zeros(1, dtype=torch.bool, device=q.device)
        valid = torch.arange(idx.shape[-1], device=idx.device) < num[..., None]
        hits = torch.zeros(*idx.shape[:-1], -(-S // bk), dtype=torch.int32, device=idx.device)
        hits.scatter_add_(-1, idx.long(), valid.int())
        return (hits > 0).repeat_interleave(bq, -2).repeat_interleave(bk, -1)[..., :T, :S]

    partial = dense(block_mask.kv_num_blocks, block_mask.kv_indices)
    full = dense(block_mask.full_kv_num_blocks, block_mask.full_kv_indices)
    mod = create_mask(block_mask.mask_mod, 1, 1, T, S, device=q.device) if block_mask.mask_mod else True
    return F.scaled_dot_product_attention(q, k, v, attn_mask=full | (partial & mod))


PRELUDE = '''\
# ---- fmforge benchmarks/time_to_quality.py adapter (benchmarks/modded_peer.py) ----
# This file is a record's train_gpt.py with the adapter's substitutions, after these lines.
import json as _ttq_json, os as _ttq_os, time as _ttq_time
_TTQ_START = _ttq_time.perf_counter()
TTQ = _ttq_json.loads({config!r})
_TTQ_DEVICE = TTQ['device']
_TTQ_CUDA = _TTQ_DEVICE == 'cuda'
_TTQ_BACKEND = 'nccl' if _TTQ_CUDA else 'gloo'
_ttq_t0 = _ttq_loss = _ttq_prof = None
_ttq_marks = []  # [step, seconds since _ttq_t0 after a synchronize, train loss]


def _ttq_sync():
    import torch
    if _TTQ_CUDA:
        torch.cuda.synchronize()


def _ttq_mark(n):
    if TTQ.get('profile') and n in TTQ['profile']:
        _ttq_profile(n)
    if n in (1, TTQ['skip'], TTQ['steps']) or n % TTQ['sync'] == 0:
        _ttq_sync()
        loss = float(_ttq_loss.detach())
        _ttq_marks.append([n, _ttq_time.perf_counter() - _ttq_t0, loss])


def _ttq_profile(n):
    """Profiles the steps after mark TTQ['profile'][0] up to [1]: profile.txt (the kernels by
    their own device time) and profile.json (ms a step by kind of kernel)."""
    import torch
    global _ttq_prof
    _ttq_sync()
    first, last = TTQ['profile']
    if n == first:
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if _TTQ_CUDA else [])
        _ttq_prof = (torch.profiler.profile(activities=acts), _ttq_time.perf_counter())
        _ttq_prof[0].__enter__()
        return
    prof, t = _ttq_prof
    wall = _ttq_time.perf_counter() - t
    prof.__exit__(None, None, None)
    steps, key = last - first, 'self_device_time_total' if _TTQ_CUDA else 'self_cpu_time_total'
    if _TTQ_CUDA:  # kernels only: GPU-side annotations (Optimizer.step, compiled graphs) span kernels
        rows = [(e.name, e.time_range.elapsed_us(), 1) for e in prof.events()
                if e.device_type.name == 'CUDA' and not getattr(e, 'is_user_annotation', False)]
    else:  # each op's own CPU time (children's left out): rough kinds
        rows = [(e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages() if e.self_cpu_time_total > 0]
    kinds = dict(attention=('flex', 'attention', 'fmha', 'flash'),
                 matmul=('gemm', 'nvjet', 'cutlass', 'sm90_', 'cublas', 'aten::mm', 'aten::bmm', 'addmm'),
                 triton=('triton',), copy=('memcpy', 'memset', 'copy_'), nccl=('nccl',))
    by_kind = dict()
    for name, us, _ in rows:
        kind = next((k for k, pats in kinds.items() if any(p in name.lower() for p in pats)), 'other')
        by_kind[kind] = by_kind.get(kind, 0.0) + us / 1e3 / steps
    summary = dict(steps=steps, after_step=first, wall_ms_per_step=wall * 1e3 / steps, timer=key,
                   ms_per_step_by_kind=by_kind, ms_per_step_total=sum(by_kind.values()),
                   launches_per_step=sum(n for _, _, n in rows) / steps)
    with open(_ttq_os.path.join(TTQ['out'], 'profile.json'), 'w') as f:
        _ttq_json.dump(summary, f, indent=1)
    with open(_ttq_os.path.join(TTQ['out'], 'profile.txt'), 'w') as f:
        f.write(_ttq_json.dumps(summary) + '\\n' + prof.key_averages().table(sort_by=key, row_limit=60) + '\\n')


def _ttq_finish(model, window_blocks):
    import torch
    _ttq_sync()
    if TTQ['save']:
        raw = getattr(model, '_orig_mod', model)
        torch.save(raw.state_dict(), _ttq_os.path.join(TTQ['out'], 'weights.pt'))
    meta = dict(steps=TTQ['steps'], marks=_ttq_marks, train_s=_ttq_marks[-1][1], startup_s=_ttq_t0 - _TTQ_START,
                window_blocks=int(window_blocks), torch=torch.__version__,
                peak_memory_mib=torch.cuda.max_memory_allocated() // 2**20 if _TTQ_CUDA else None)
    with open(_ttq_os.path.join(TTQ['out'], 'meta.json'), 'w') as f:
        _ttq_json.dump(meta, f)


{dense}
# ---- end of the adapter's lines; the record's patched train_gpt.py follows ----
'''


def patch(source: str, where: str) -> tuple[str, str]:
    """(patched script, definitions part) of a record's source, both still without PRELUDE."""
    for pattern, repl, count, regex in SUBSTITUTIONS:
        source = substitute(source, pattern, repl, count, where, regex)
    cut = list(re.finditer(DEFS_END, source, re.M))
    if len(cut) != 1:
        raise PatchError(f"{where}: pattern {DEFS_END!r} matched {len(cut)} times, expected 1")
    defs = source[:cut[0].start()]
    for pattern, repl, count, regex in DEFS_SUBSTITUTIONS:
        defs = substitute(defs, pattern, repl, count, where, regex)
    return source, defs


def prelude(config: dict) -> str:
    """The adapter's lines at the top of a patched script: its run's settings and helpers."""
    return PRELUDE.format(config=json.dumps(config), dense=inspect.getsource(dense_flex_attention))


def write_bin(shards, path: Path, sep: int, seed: int | None = None) -> dict:
    """The documents of fmforge token shards as one .bin of theirs (header of 256 int32:
    magic, version, token count; then uint16 ids), each document after the separator `sep`
    (added where a document does not start with it), in an order drawn from `seed` (None:
    the shards' order)."""
    docs = [s.doc(i) for s in shards for i in range(len(s))]
    top = max((int(d.max()) for d in docs if len(d)), default=0)
    if max(top, sep) >= 2**16:
        raise ValueError(f"token id {max(top, sep)} does not fit the uint16 ids of their .bin format (vocabulary > 65,536)")
    order = np.random.default_rng(seed).permutation(len(docs)) if seed is not None else np.arange(len(docs))
    added = 0
    parts = []
    for i in order:
        d = docs[i]
        if not len(d) or int(d[0]) != sep:
            parts.append(np.array([sep], np.uint16))
            added += 1
        parts.append(np.asarray(d).astype(np.uint16))
    tokens = np.concatenate(parts) if parts else np.zeros(0, np.uint16)
    if len(tokens) >= 2**31:
        raise ValueError(f"{len(tokens):,} tokens do not fit their header's int32 count")
    header = np.zeros(HEADER_INTS, np.int32)
    header[:3] = MAGIC, VERSION, len(tokens)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.tobytes())
    os.replace(tmp, path)
    return {"path": str(path), "docs": len(docs), "tokens": int(len(tokens)), "separators_added": added}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plan_steps(measured: dict, budget: float, safety: float, skip: int) -> int:
    """Steps whose run fits `safety` x `budget` seconds, compilation included, from a run's
    measurement: {"first_s": seconds to step `skip`, "step_s": seconds a step after it}."""
    return skip + max(2, math.floor((safety * budget - measured["first_s"]) / measured["step_s"]))


def measure(meta: dict, skip: int) -> dict:
    """{"first_s", "step_s"} of a finished run's marks (seconds after a synchronize)."""
    at = {int(n): t for n, t, _ in meta["marks"]}
    last = max(at)
    if skip not in at or last <= skip:
        raise RuntimeError(f"the run took {last} steps; measuring needs more than {skip}")
    return {"first_s": at[skip], "step_s": (at[last] - at[skip]) / (last - skip), "from_steps": last}


class ModdedPeer:
    """One record, our shards, one device: warm-up, calibration, and scored runs."""

    def __init__(self, path: str, work: Path, shards: Path, vocab: int, sep: int, device, budget: float,
                 tiny: bool = False):
        self.where, self.work, self.shards = str(path), Path(work) / "modded", Path(shards)
        self.source = record_source(path)
        self.script, self.defs = patch(self.source, self.where)
        layers, heads, dim = shape_of(self.source, self.where)
        self.S = {**FULL, **(TINY if tiny else {})}
        self.shape = [layers, self.S["heads"], self.S["dim"]] if tiny else [layers, heads, dim]
        self.vocab, self.sep, self.device, self.budget = (vocab + BLOCK - 1) // BLOCK * BLOCK, sep, device, budget
        self.bins: dict[int, dict] = {}
        self.measured: dict | None = None  # the latest run's timing, for the next run's plan

    def data(self, seed: int) -> dict:
        """Our train split as their .bin, documents in the seed's order (written once)."""
        from fmforge.tokenizer.shards import open_split

        if seed not in self.bins:
            self.bins[seed] = write_bin(open_split(self.shards, "train"), self.work / "data" / f"train-seed{seed}.bin",
                                        self.sep, seed)
            if self.bins[seed]["tokens"] <= self.S["tokens_per_step"] + 1:
                raise ValueError(f"{self.bins[seed]['tokens']} training tokens: fewer than one step's "
                                 f"{self.S['tokens_per_step']} + 1")
        return self.bins[seed]

    def train(self, tag: str, steps: int, lr_scale: float, seed: int, save: bool) -> dict:
        """Runs the patched script for `steps` steps in work/modded/<tag>; its meta.json."""
        out = self.work / tag
        out.mkdir(parents=True, exist_ok=True)
        for f in ("weights.pt", "meta.json", "profile.json", "profile.txt"):
            (out / f).unlink(missing_ok=True)
        config = {"device": self.device.type, "sep": self.sep, "vocab": self.vocab, "shape": self.shape,
                  "train_bin": self.data(seed)["path"], "tokens_per_step": self.S["tokens_per_step"],
                  "steps": steps, "lr_scale": lr_scale, "seed": seed, "skip": self.S["skip"],
                  "sync": self.S["sync"], "save": save, "out": str(out),
                  "profile": self.S["profile"] if tag == "warm" else None}
        script = out / "train_gpt.py"
        script.write_text(prelude(config) + self.script)
        env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(free_port())}
        if self.device.type != "cuda":
            env["TORCHDYNAMO_DISABLE"] = "1"  # no torch.compile on the CPU, as nanoGPT's smoke run
        timeout = self.S["timeout_s"] if tag == "warm" else min(self.S["timeout_s"], 300 + 3 * self.budget)
        t0 = time.perf_counter()
        with open(out / "stdout.txt", "w") as log:
            try:
                p = subprocess.run([sys.executable, str(script)], cwd=out, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{script} ran past {timeout:.0f} s; its output: {out / 'stdout.txt'}")
        wall = time.perf_counter() - t0
        if p.returncode != 0 or not (out / "meta.json").is_file():
            tail = (out / "stdout.txt").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{script} exited with {p.returncode}; the end of its output:\n{tail}")
        return {**json.loads((out / "meta.json").read_text()), "wall_s": wall, "dir": str(out)}

    def warm(self) -> dict:
        """A few steps: fills the compile cache, so that no swept rate pays for the cold compile.
        Some of its steps are profiled: `profile` in the result (see _ttq_profile)."""
        meta = self.train("warm", self.S["warm_steps"], 1.0, 0, save=False)
        prof = Path(meta["dir"]) / "profile.json"
        return {**meta, "profile": json.loads(prof.read_text()) if prof.is_file() else None}

    def calibrate(self) -> dict:
        """A short run with the whole schedule: its compilation time and seconds a step."""
        meta = self.train("calibrate", self.S["calib_steps"], 1.0, 0, save=False)
        self.measured = measure(meta, self.S["skip"])
        return {**self.measured, "steps": meta["steps"], "train_s": meta["train_s"], "wall_s": meta["wall_s"],
                "planned_steps": plan_steps(self.measured, self.budget, self.S["safety"], self.S["skip"])}

    def scorer(self, out: Path, meta: dict):
        """The trained model as score_docs's model_fn: model_fn(x, y, reduction) -> NLL."""
        import torch
        import torch.nn.functional as F
        from torch.nn.attention.flex_attention import flex_attention

        config = {"device": self.device.type, "sep": self.sep, "vocab": self.vocab, "shape": self.shape}
        defs_file = Path(out) / "modded_defs.py"
        defs_file.write_text(prelude(config) + self.defs)
        name = f"ttq_modded_defs_{abs(hash(str(defs_file)))}"
        spec = importlib.util.spec_from_file_location(name, defs_file)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        # Scoring runs FlexAttention itself (forward only, eager). Eager FlexAttention applies the
        # mask_mod alone, not the block mask's sliding window: the same when the window covers
        # the whole scored window (their final window, 1,792 tokens, does for 1,024), else the
        # dense stand-in gives the trained semantics.
        covers = meta["window_blocks"] * BLOCK >= self.S["context"]
        mod._ttq_attention = flex_attention if covers else dense_flex_attention
        gpt = mod.GPT(vocab_size=self.vocab, num_layers=self.shape[0], num_heads=self.shape[1], model_dim=self.shape[2])
        gpt.load_state_dict(torch.load(Path(out) / "weights.pt", map_location="cpu"), assign=True)
        gpt = gpt.to(self.device).eval()
        window = torch.tensor(meta["window_blocks"], dtype=torch.int32, device=self.device)

        class Scored(torch.nn.Module):
            """Each (B, T) row as its own flat sequence, as their forward takes one."""

            def __init__(self, gpt, window):
                super().__init__()
                self.gpt, self.window = gpt, window

            def forward(self, x, y, reduction="sum"):
                if x.shape[-1] % BLOCK:
                    raise ValueError(f"windows of {x.shape[-1]} tokens: their block mask needs a multiple of {BLOCK}")
                with torch.autocast(x.device.type, enabled=False):  # their own bf16, as in training
                    nll = torch.cat([F.cross_entropy(self.gpt(row.int(), None, self.window)[0].float(), t,
                                                     ignore_index=-100, reduction="none") for row, t in zip(x, y)])
                if reduction == "sum":
                    return nll.sum()
                return nll.sum() / (y != -100).sum() if reduction == "mean" else nll

        return Scored(gpt, window)

    def run(self, lr_scale: float, seed: int, score) -> dict:
        """One scored run: steps planned from the latest measurement, trained, then score(model_fn,
        shards, context, device) -> {dev, test}; the run's measurement becomes the next plan's."""
        import torch

        if self.measured is None:
            self.calibrate()
        planned = plan_steps(self.measured, self.budget, self.S["safety"], self.S["skip"])
        predicted = self.measured["first_s"] + (planned - self.S["skip"]) * self.measured["step_s"]
        tag = f"lr{lr_scale:g}-seed{seed}"
        meta = self.train(tag, planned, lr_scale, seed, save=True)
        plan_from = self.measured
        self.measured = measure(meta, self.S["skip"])
        model = self.scorer(self.work / tag, meta)
        val = score(model, self.shards, self.S["context"], self.device)
        n_params = sum(p.numel() for p in model.parameters())
        del model
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return {"system": "modded_nanogpt", "lr_scale": lr_scale, "seed": seed, "shape": self.shape,
                "params": n_params, "steps": meta["steps"], "planned_steps": planned, "plan_from": plan_from,
                "predicted_train_s": predicted, "train_s": meta["train_s"], "over_budget": meta["train_s"] > self.budget,
                "wall_s": meta["wall_s"], "startup_s": meta["startup_s"], "first_steps_s": self.measured["first_s"],
                "step_s": self.measured["step_s"], "tokens": meta["steps"] * self.S["tokens_per_step"],
                "window_blocks": meta["window_blocks"], "peak_memory_mib": meta["peak_memory_mib"],
                "final_train_loss": meta["marks"][-1][2], "loss_curve": [m[::2] for m in meta["marks"]],
                "data": self.bins[seed], **val}
