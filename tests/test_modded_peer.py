"""benchmarks/modded_peer.py, the modded-nanogpt peer of time_to_quality.py, on synthetic
inputs only (CI has no copy of their repository): the record log's source, the .bin of our
shards, the substitutions' errors, the CPU stand-in for FlexAttention, and a whole tiny run
of time_to_quality.py with a record of our own that has the lines the adapter patches."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import modded_peer  # noqa: E402
from modded_peer import PatchError, patch, record_source, substitute, write_bin  # noqa: E402

from fmforge.tokenizer.shards import open_split, write_shard  # noqa: E402

# A stand-in for a record's train_gpt.py, written for these tests: a small model of our own
# with FlexAttention and document masking, and, line for line, what the adapter substitutes
# (the cuda calls, the separator 50256, GPT(...), Hyperparameters, the validation test, the
# optimizers, the clock, the backward, zero_grad, the peak-memory line, the logits).
FAKE_RECORD = '''import os
import sys
with open(sys.argv[0]) as f:
    code = f.read()
import glob
import subprocess
import time
from dataclasses import dataclass

import torch
torch.empty(1, device='cuda', requires_grad=True).backward()
from torch import nn
import torch.nn.functional as F
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.attention.flex_attention import BlockMask, flex_attention


class Muon(torch.optim.SGD):  # not Muon: SGD with momentum, for the matrices
    def __init__(self, params, lr=0.02, momentum=0.9):
        super().__init__(params, lr=lr, momentum=momentum)
        self.unused = torch.zeros(1, device='cuda')


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.h = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x, block_mask):
        T, C = x.shape[1], x.shape[2]
        q, k, v = (t.view(1, T, self.h, C // self.h).transpose(1, 2) for t in self.qkv(x).split(C, -1))
        y = flex_attention(q, k, v, block_mask=block_mask)
        return self.out(y.transpose(1, 2).reshape(1, T, C))


class GPT(nn.Module):
    def __init__(self, vocab_size, num_layers, num_heads, model_dim):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, model_dim)
        self.blocks = nn.ModuleList(Attention(model_dim, num_heads) for _ in range(num_layers))
        self.lm_head = nn.Linear(model_dim, vocab_size, bias=False)

    def forward(self, inputs, targets, sliding_window_num_blocks):
        docs = (inputs == 50256).cumsum(0)
        n = len(inputs) // 128

        def document_causal(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (docs[q_idx] == docs[kv_idx])

        blocks = torch.arange(n, dtype=torch.int32, device='cuda')
        near = (blocks[:, None] >= blocks) & (blocks[:, None] - blocks < sliding_window_num_blocks)
        count = near.sum(-1, dtype=torch.int32)[None, None]
        order = near.int().argsort(dim=-1, descending=True, stable=True).int()[None, None]
        block_mask = BlockMask.from_kv_blocks(count, order, BLOCK_SIZE=128, mask_mod=document_causal)
        x = self.embed(inputs[None])
        for block in self.blocks:
            x = x + block(F.rms_norm(x, (x.size(-1),)), block_mask)
        logits = self.lm_head(F.rms_norm(x, (x.size(-1),)))
        logits = 15 * torch.tanh(logits / 15)
        logits = logits.float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets)


def load(path):
    header = torch.from_file(path, False, 256, dtype=torch.int32)
    assert int(header[0]) == 20240520 and int(header[1]) == 1
    tokens = torch.empty(int(header[2]), dtype=torch.uint16, pin_memory=True)
    with open(path, 'rb') as f:
        f.seek(1024)
        f.readinto(tokens.numpy())
    return tokens


class Loader:
    def __init__(self, pattern):
        self.tokens, self.pos = load(sorted(glob.glob(pattern))[0]), 0

    def next_batch(self, n):
        if self.pos + n + 1 >= len(self.tokens):
            self.pos = 0
        buf = self.tokens[self.pos:self.pos + n + 1]
        self.pos += n
        return buf[:-1].to(device='cuda', dtype=torch.int32), buf[1:].to(device='cuda', dtype=torch.int64)


@dataclass
class Hyperparameters:
    train_bin = 'data/train_*.bin'
    val_bin = 'data/val_*.bin'
    batch_size = 4096
    max_device_batch_size = 4096
    num_iterations = 100
    val_loss_every = 10
    save_checkpoint = False
args = Hyperparameters()

rank = int(os.environ['RANK'])
local_rank = int(os.environ['LOCAL_RANK'])
assert torch.cuda.is_available()
torch.cuda.set_device(local_rank)
dist.init_process_group(backend='nccl', device_id=torch.device(local_rank))


def print0(s):
    if rank == 0:
        print(s)


print0(subprocess.run(['nvidia-smi'], stdout=subprocess.PIPE, text=True).stdout)
train_loader = Loader(args.train_bin)
val_loader = Loader(args.val_bin)
model = GPT(vocab_size=50304, num_layers=2, num_heads=4, model_dim=128)
model = model.cuda()
model = torch.compile(model)
ddp_model = DDP(model, device_ids=[local_rank], broadcast_buffers=False)
optimizer1 = torch.optim.Adam([p for n, p in model.named_parameters() if 'blocks' not in n], lr=0.01)
optimizer2 = Muon(list(model.blocks.parameters()), lr=0.05)
optimizers = [optimizer1, optimizer2]
schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda it: 1 - it / args.num_iterations) for o in optimizers]
sliding_window_num_blocks = torch.tensor(1, dtype=torch.int32, device='cuda')
torch.cuda.synchronize()
t0 = time.perf_counter()
# begin training
for step in range(args.num_iterations + 1):
    last_step = step == args.num_iterations
    sliding_window_num_blocks.copy_(1 + 13 * step // args.num_iterations)
    if last_step or (args.val_loss_every > 0 and step % args.val_loss_every == 0):
        torch.cuda.synchronize()
        inputs, targets = val_loader.next_batch(args.batch_size)
        with torch.no_grad():
            print0(float(ddp_model(inputs, targets, sliding_window_num_blocks)))
        torch.cuda.synchronize()
    if last_step:
        break
    inputs_train, targets_train = train_loader.next_batch(args.batch_size)
    micro_bs = args.max_device_batch_size
    for micro_inputs_train, micro_targets_train in zip(inputs_train.split(micro_bs), targets_train.split(micro_bs)):
        ddp_model(micro_inputs_train, micro_targets_train, sliding_window_num_blocks).backward()
    for opt, sched in zip(optimizers, schedulers):
        opt.step()
        sched.step()
    model.zero_grad(set_to_none=True)
print0(f'peak memory consumption: {torch.cuda.max_memory_allocated() // 1024 // 1024} MiB')
dist.destroy_process_group()
'''
LOG_TAIL = "=" * 100 + "\nRunning PyTorch ...\n" + "=" * 100 + "\nstep:0/100 val_loss:10.8\n"


def test_record_source_is_the_log_head(tmp_path):
    log = tmp_path / "record.txt"
    log.write_text(FAKE_RECORD + LOG_TAIL)
    assert record_source(log) == FAKE_RECORD
    py = tmp_path / "train_gpt.py"
    py.write_text(FAKE_RECORD)
    assert record_source(py) == FAKE_RECORD  # a script is taken whole
    bare = tmp_path / "bare.txt"
    bare.write_text("print('=' * 100)\n x = 1\n ====\n")  # no line made only of '='
    with pytest.raises(PatchError, match="bare.txt"):
        record_source(bare)


def test_substitution_that_does_not_match_names_file_and_pattern():
    with pytest.raises(PatchError) as e:
        substitute("a = 1\n", "b = 2", "c", 1, "records/x.txt")
    assert "records/x.txt" in str(e.value) and "'b = 2'" in str(e.value) and "matched 0 times, expected 1" in str(e.value)
    with pytest.raises(PatchError, match="matched 2 times, expected 1"):
        substitute("a\na\n", "a", "b", 1, "x.txt")
    assert substitute("ab\nab\n", r"^a", "c", 2, "x.txt", regex=True) == "cb\ncb\n"
    for line, says in (("        docs = (inputs == 50256).cumsum(0)\n", "'inputs == 50256'"),
                       ("optimizers = [optimizer1, optimizer2]\n", "optimizer1, optimizer2")):
        with pytest.raises(PatchError) as e:  # another record: an error that names the file and the pattern
            patch(FAKE_RECORD.replace(line, ""), "other.py")
        assert str(e.value).startswith("other.py: pattern") and says in str(e.value)
    script, defs = patch(FAKE_RECORD, "fake.txt")
    assert "50256" not in script and "TTQ['sep']" in script and "class Hyperparameters" not in defs
    assert "sys.argv[0]" not in defs and "class GPT" in defs


def test_a_record_it_cannot_patch_stops_the_benchmark_at_once(tmp_path):
    record, work = tmp_path / "other.txt", tmp_path / "work"
    record.write_text(FAKE_RECORD.replace("inputs == 50256", "inputs == EOT") + LOG_TAIL)
    r = subprocess.run([sys.executable, "benchmarks/time_to_quality.py", "--work", str(work), "--modded", str(record)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--modded:" in r.stderr and "'inputs == 50256' matched 0 times" in r.stderr, r.stderr
    assert str(record) in r.stderr and not work.exists()


def test_bin_of_our_shards(tmp_path):
    sep = 3
    docs = [np.array([sep, 10, 11, 12], np.uint32), np.array([sep, 20], np.uint32), np.array([30, 31], np.uint32)]
    write_shard(tmp_path / "train-00000.bin", docs[:2], [9, 9], 512)
    write_shard(tmp_path / "train-00001.bin", docs[2:], [9], 512)
    shards = open_split(tmp_path, "train")
    info = write_bin(shards, tmp_path / "out" / "train.bin", sep)
    raw = tmp_path / "out" / "train.bin"
    header = np.fromfile(raw, dtype=np.int32, count=256)
    want = [sep, 10, 11, 12, sep, 20, sep, 30, 31]  # the third document gets its separator
    assert list(header[:3]) == [20240520, 1, len(want)] and not header[3:].any()
    assert np.fromfile(raw, dtype=np.uint16, offset=256 * 4).tolist() == want
    assert raw.stat().st_size == 1024 + 2 * len(want)
    assert info == {"path": str(raw), "docs": 3, "tokens": len(want), "separators_added": 1}
    # a seed draws the documents' order; every document is there once
    orders = set()
    for seed in range(6):
        write_bin(shards, raw, sep, seed)
        got = np.fromfile(raw, dtype=np.uint16, offset=1024).tolist()
        parts = "|".join(map(str, got)).split(f"|{sep}|")
        orders.add(tuple(got))
        assert sorted(got) == sorted(want) and got[0] == sep and len(parts) == 3
    assert len(orders) > 1
    write_shard(tmp_path / "big-00000.bin", [np.array([0, 70000], np.uint32)], [3], 80000)
    with pytest.raises(ValueError, match="uint16"):
        write_bin(open_split(tmp_path, "big"), tmp_path / "big.bin", 0)


def test_dense_stand_in_is_flex_attention():
    """The CPU training stand-in attends where compiled FlexAttention does: full blocks,
    partial blocks by their mask_mod, nothing else (the sliding window lives in the block
    mask only). Eager FlexAttention applies the mask_mod alone, so it is the reference when
    the window covers every block, and a token mask written out is the reference when not."""
    import torch.nn.functional as F
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    torch.manual_seed(0)
    T, n = 512, 4  # 4 blocks of 128; documents 0..299 and 300..511, so block 2 holds both
    pos = torch.arange(T)
    docs = (pos >= 300).long()

    def mask_mod(b, h, q, kv):
        return (q >= kv) & (docs[q] == docs[kv])

    lo, hi = docs.view(n, 128)[:, 0], docs.view(n, 128)[:, -1]
    i = torch.arange(n)

    def ordered(m):
        return m.sum(-1, dtype=torch.int32)[None, None], m.int().argsort(dim=-1, descending=True, stable=True).int()[None, None]

    q, k, v = (torch.randn(1, 2, T, 16) for _ in range(3))
    for window in (4, 2):
        near = i[:, None] - i < window
        some = (i[:, None] >= i) & near & (lo[:, None] <= hi) & (lo <= hi[:, None])
        full = (i[:, None] > i) & near & (lo[:, None] == hi) & (lo == hi[:, None])
        assert full.any() and (some & ~full).any()
        bm = BlockMask.from_kv_blocks(*ordered(some & ~full), *ordered(full), BLOCK_SIZE=128, mask_mod=mask_mod)
        got = modded_peer.dense_flex_attention(q, k, v, bm)
        allowed = mask_mod(0, 0, pos[:, None], pos) & (pos[:, None] // 128 - pos // 128 < window)
        assert torch.allclose(got, F.scaled_dot_product_attention(q, k, v, attn_mask=allowed), atol=1e-5)
        if window == n:
            assert torch.allclose(got, flex_attention(q, k, v, block_mask=bm), atol=1e-5)
        else:  # the window takes block 0 from the rows 256..299 of document 0
            assert not torch.allclose(got[..., 256:300, :], flex_attention(q, k, v, block_mask=bm)[..., 256:300, :])


@pytest.mark.slow  # ~40 s on 2 cores: five processes of the peer
@pytest.mark.timeout(400)
def test_time_to_quality_with_a_modded_record_tiny_cpu(tmp_path):
    from test_time_to_quality import _corpus

    data, work, out = tmp_path / "data", tmp_path / "work", tmp_path / "ttq.json"
    data.mkdir()
    _corpus(data)
    record = tmp_path / "record.txt"
    record.write_text(FAKE_RECORD + LOG_TAIL)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    scales = [0.5, 2.0]
    r = subprocess.run([sys.executable, "benchmarks/time_to_quality.py", "--device", "cpu", "--tiny", "--data", str(data),
                        "--modded", str(record), "--modded-lr-scales", ",".join(map(str, scales)), "--repeats", "2",
                        "--work", str(work), "--out", str(out), "--budget", "1"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=380)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["complete"] and res["timing"]["modded_compile_warmup_s"] > 0
    prof = res["timing"]["modded_profile"]  # the warm-up's steps 2-3 profiled (TINY "profile": [1, 3])
    assert prof["steps"] == 2 and prof["after_step"] == 1 and prof["ms_per_step_total"] > 0
    assert prof["ms_per_step_by_kind"]["matmul"] > 0 and prof["launches_per_step"] > 10
    assert "Self CPU" in (work / "modded" / "warm" / "profile.txt").read_text()
    cal = res["timing"]["modded_calibration"]
    assert cal["steps"] == 6 and cal["step_s"] > 0 and cal["planned_steps"] >= 3
    runs = res["runs"]
    assert not [x for x in runs if "error" in x] and {x["system"] for x in runs} == {"modded_nanogpt"}
    sweep = {x["lr_scale"]: x for x in runs if x["role"] == "sweep"}
    assert sorted(sweep) == scales and all(x["seed"] == 0 for x in sweep.values())
    info = res["data"]
    for x in runs:  # the planned schedule ran to its end; every split scored whole
        assert x["steps"] == x["planned_steps"] and x["loss_curve"][-1][0] == x["steps"] and x["train_s"] > 0
        assert x["shape"] == [2, 2, 64] and x["window_blocks"] == 14 and x["data"]["separators_added"] == 0
        for s in ("dev", "test"):
            assert (x[s]["docs"], x[s]["bytes"]) == (info[s]["docs"], info[s]["bytes"]) and 0 < x[s]["bpb"] < 20
    best = min(sweep, key=lambda k: sweep[k]["dev"]["bpb"])
    ch = res["choices"]["modded_nanogpt"]
    assert ch["chosen_lr_scale"] == best and ch["at_edge_of_sweep"] is True
    chosen = [x for x in runs if x["lr_scale"] == best]
    assert sorted(x["seed"] for x in chosen) == [0, 1]
    rep = res["reported"]["modded_nanogpt"]
    assert rep["test_bpb"]["n"] == 2 and rep["test_bpb"]["mean"] == pytest.approx(np.mean([x["test"]["bpb"] for x in chosen]))
    # the patched script lies in --work, and what the record says of its data went in untouched
    script = (work / "modded" / f"lr{best:g}-seed1" / "train_gpt.py").read_text()
    assert "TTQ = " in script and "inputs == TTQ['sep']" in script
