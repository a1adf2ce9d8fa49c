"""model.value_embeds and model.unet_skips (modded-nanogpt's value embeddings and U-net skips):
the forward written out by hand from the weights, incremental decoding and the serving engine
against the full forward, where the optimizer puts the new parameters, a checkpoint round
trip, the config and export refusals, and a model with both off unchanged."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from fmforge.config import ModelConfig, TrainConfig, load_recipe
from fmforge.errors import UserError
from fmforge.eval.generate import generate
from fmforge.model.flops import count_params
from fmforge.model.transformer import Transformer, new_caches
from fmforge.model.weights import load_model, save_model
from fmforge.serve.engine import Engine, greedy
from fmforge.train.optim import build_optimizer

V = 61
# (config, {layer: value-embedding table}, {layer: mirror layer whose output it adds}),
# written out here rather than derived from the code under test
CASES = {
    "ve k=1": (dict(n_layers=3, value_embeds=1), {0: 0, 2: 0}, {}),
    "ve 2k=n": (dict(n_layers=4, value_embeds=2), {0: 0, 1: 1, 2: 0, 3: 1}, {}),
    "unet even": (dict(n_layers=4, unet_skips=True), {}, {2: 1, 3: 0}),
    "unet odd": (dict(n_layers=5, unet_skips=True), {}, {3: 1, 4: 0}),  # layer 2 neither keeps nor adds
    "both": (dict(n_layers=5, value_embeds=2, unet_skips=True), {0: 0, 1: 1, 3: 0, 4: 1}, {3: 1, 4: 0}),
}


def _model(seed=0, scramble=True, **over) -> Transformer:
    """A tiny GQA, QK-norm model. `scramble`: the new scalars away from their init (each its own
    value), so that a swapped a/b, a wrong weight or a wrong layer shows in the outputs."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, d_model=32, n_heads=4, n_kv_heads=2, context_length=24, qk_norm=True,
                      init_std=0.2, **over)
    m = Transformer(cfg).eval()
    if scramble:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.endswith(("ve_mix", "skip_weight")):
                    p.copy_(torch.rand(p.shape, generator=g) * 1.5 - 0.25)
    return m


def _rms(x, w, eps=1e-5):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rotate(x, base=10000.0):
    """Rotary position embedding of x (B, H, T, hd), first half of each head paired with the second."""
    hd, t = x.shape[-1], x.shape[-2]
    ang = torch.arange(t, dtype=torch.float64)[:, None] * base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    a, b = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()], -1)


def _by_hand(m: Transformer, idx: torch.Tensor, tables: dict, skips_from: dict) -> torch.Tensor:
    """Logits in float64 from the state dict: a Llama block, plus v' = a·v + b·table[token] at
    the layers in `tables` and x += w·(output of layer skips_from[i]) before layer i."""
    c = m.cfg
    sd = {k: v.double() for k, v in m.state_dict().items()}
    nh, nkv, hd = c.n_heads, c.kv_heads, c.head_dim
    b, t = idx.shape
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    x = sd["embed.weight"][idx]
    outs = {}
    for i in range(c.n_layers):
        p = f"layers.{i}."
        if i in skips_from:
            x = x + sd[p + "skip_weight"][0] * outs[skips_from[i]]
        h = _rms(x, sd[p + "attn_norm.weight"])
        w = sd[p + "attn.wqkv.weight"]
        q, k, v = h @ w[: nh * hd].T, h @ w[nh * hd: (nh + nkv) * hd].T, h @ w[(nh + nkv) * hd:].T
        if i in tables:
            mix_a, mix_b = sd[p + "attn.ve_mix"]
            v = mix_a * v + mix_b * sd[f"value_embeds.{tables[i]}.weight"][idx]
        q = _rotate(_rms(q.view(b, t, nh, hd), sd[p + "attn.q_norm.weight"]).transpose(1, 2))
        k = _rotate(_rms(k.view(b, t, nkv, hd), sd[p + "attn.k_norm.weight"]).transpose(1, 2))
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.view(b, t, nkv, hd).transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
        att = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~causal, float("-inf")).softmax(-1)
        x = x + (att @ v).transpose(1, 2).reshape(b, t, nh * hd) @ sd[p + "attn.wo.weight"].T
        gate, up = (_rms(x, sd[p + "mlp_norm.weight"]) @ sd[p + "mlp.w13.weight"].T).chunk(2, -1)
        x = x + (gate * torch.sigmoid(gate) * up) @ sd[p + "mlp.w2.weight"].T
        outs[i] = x
    return _rms(x, sd["norm.weight"]) @ sd["embed.weight"].T  # tied head


def _tokens(b=2, t=12, seed=3):
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_forward_is_the_math_written_out(case):
    over, tables, skips_from = CASES[case]
    m = _model(**over)
    x = _tokens()
    want = _by_hand(m, x, tables, skips_from)
    assert torch.allclose(m(x).double(), want, atol=1e-4)
    # the options matter on this model: the plain block math is far from it
    assert not torch.allclose(_by_hand(m, x, {}, {}), want, atol=1e-2)
    extra = sorted(k for k in m.state_dict() if k.endswith(("ve_mix", "skip_weight")) or k.startswith("value_embeds"))
    assert extra == sorted([f"layers.{i}.attn.ve_mix" for i in tables] + [f"layers.{i}.skip_weight" for i in skips_from]
                           + [f"value_embeds.{j}.weight" for j in range(over.get("value_embeds", 0))])


def test_init_of_the_new_parameters():
    m = _model(scramble=False, **CASES["both"][0])
    sd = m.state_dict()
    for i in (0, 1, 3, 4):
        assert sd[f"layers.{i}.attn.ve_mix"].tolist() == [0.5, 0.5]
    for i in (3, 4):
        assert sd[f"layers.{i}.skip_weight"].tolist() == [1.0]
    for j in range(2):  # at the RMS of v at init: init_std·√d_model (0.2·√32 ≈ 1.13)
        t = sd[f"value_embeds.{j}.weight"]
        assert t.shape == (V, 2 * 8) and t.std().item() == pytest.approx(0.2 * math.sqrt(32), rel=0.1)
    assert not torch.equal(sd["value_embeds.0.weight"], sd["value_embeds.1.weight"])


@torch.no_grad()
def test_incremental_decoding_equals_the_full_forward():
    m = _model(**CASES["both"][0])
    x = _tokens(b=1, t=11)
    full = m.hidden(x)
    caches, pos, got = new_caches(m, 1, 11), 0, []
    for n in (4, 1, 3, 1, 2):  # a prefill, then single tokens and a chunk: each uses its own token ids
        got.append(m.hidden(x[:, pos: pos + n], caches, start=pos))
        pos += n
    assert torch.allclose(torch.cat(got, 1), full, atol=1e-5)
    prompt = [5, 17, 3, 42]
    seq = list(prompt)
    for _ in range(8):
        seq.append(int(m(torch.tensor([seq]))[0, -1].argmax()))
    assert generate(m, prompt, 8) == seq[len(prompt):]


@torch.no_grad()
def test_serving_engine_prefill_and_decode_equal_the_model():
    m = _model(**CASES["both"][0])
    prompts = [[3, 14, 15, 9, 26, 53], [58, 9]]
    eng = Engine(m, 2, 20)
    for p, got in zip(prompts, eng.prefill([0, 1], prompts, [True, True])):
        assert torch.allclose(got, m(torch.tensor([p]))[0], atol=1e-4)
    seqs = [list(p) for p in prompts]
    for step in range(4):
        nxt = [(7 * step + 11 * i) % V for i in range(2)]
        logits = eng.decode(nxt, [len(s) for s in seqs])
        for i, s in enumerate(seqs):
            s.append(nxt[i])
            assert torch.allclose(logits[i], m(torch.tensor([s]))[0, -1], atol=1e-4)
    for p, g in zip(prompts, greedy(m, prompts, 6, buckets=True)):  # the padded static shapes
        seq = list(p)
        for _ in range(6):
            seq.append(int(m(torch.tensor([seq]))[0, -1].argmax()))
        assert g == seq[len(p):]


def _new_params(m):
    return {n: p for n, p in m.named_parameters()
            if n.endswith(("ve_mix", "skip_weight")) or n.startswith("value_embeds")}


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_tables_and_scalars_go_to_adamw_without_decay_and_learn(optimizer):
    m = _model(scramble=False, **CASES["both"][0]).train()
    new = _new_params(m)
    assert len(new) == 2 + 4 + 2
    opt = build_optimizer(m, TrainConfig(optimizer=optimizer, weight_decay=0.1, max_steps=1), "cpu")
    where = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in new.items():
        assert where[id(p)]["weight_decay"] == 0.0 and not where[id(p)].get("muon"), name
    if optimizer == "muon":  # Muon gets the blocks' matrices and nothing else
        muon = {id(p) for g in opt.param_groups if g["muon"] for p in g["params"]}
        names = {n for n, p in m.named_parameters() if id(p) in muon}
        assert names == {f"layers.{i}.{w}.weight" for i in range(5)
                         for w in ("attn.wqkv", "attn.wo", "mlp.w13", "mlp.w2")}
    before = {n: p.detach().clone() for n, p in new.items()}
    x = _tokens(b=4, t=16)
    m(x[:, :-1], x[:, 1:]).backward()
    for name, p in new.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    for name, p in new.items():
        assert not torch.equal(p, before[name]), name


def test_checkpoint_and_saved_model_round_trip(tmp_path):
    from fmforge.train import checkpoint

    m = _model(**CASES["both"][0]).train()
    opt = build_optimizer(m, TrainConfig(optimizer="muon", max_steps=1), "cpu")
    x = _tokens(b=2, t=16)
    m(x[:, :-1], x[:, 1:]).backward()
    opt.step()
    ck = checkpoint.save(tmp_path / "ck", 1, m, opt, {"model_config": m.cfg.model_dump()}, keep=1)
    m2 = _model(seed=9, **CASES["both"][0]).train()
    opt2 = build_optimizer(m2, TrainConfig(optimizer="muon", max_steps=1), "cpu")
    m2(x[:, :-1], x[:, 1:]).backward()
    opt2.step()  # optimizer state to overwrite
    checkpoint.restore(ck, m2, opt2)
    for k, v in m.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v), k
    for p, p2 in zip(m.parameters(), m2.parameters()):
        for key, val in opt.state[p].items():
            assert torch.equal(opt2.state[p2][key], val)
    with torch.no_grad():
        assert torch.equal(checkpoint.consolidated_model(ck)(x), m.eval()(x))
        save_model(m.state_dict(), m.cfg, tmp_path)
        assert torch.equal(load_model(tmp_path)(x), m(x))


def test_param_count_counts_tables_as_embeddings():
    for over, _, _ in CASES.values():
        m = _model(**over)
        assert count_params(m.cfg).total == sum(p.numel() for p in m.parameters())
    both, off = _model(**CASES["both"][0]).cfg, _model(n_layers=5).cfg
    # the tables (2 × 61 × 16) are lookup tables: only the 8 mixes and 2 skip weights join N
    assert count_params(both).total - count_params(off).total == 2 * V * 16 + 8 + 2
    assert count_params(both).non_embedding - count_params(off).non_embedding == 8 + 2


OLD_KEYS = ["embed.weight", "norm.weight"] + [f"layers.{i}.{w}.weight" for i in range(3) for w in (
    "attn.k_norm", "attn.q_norm", "attn.wo", "attn.wqkv", "attn_norm", "mlp.w13", "mlp.w2", "mlp_norm")]


@torch.no_grad()
def test_both_off_is_the_model_of_before():
    """Both options set off: keys, seeded init and logits as main's code (7041cb1, without the
    fields) gave for this seed and input."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=61, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, context_length=16, qk_norm=True,
                      value_embeds=0, unet_skips=False)
    m = Transformer(cfg).eval()
    assert sorted(m.state_dict()) == sorted(OLD_KEYS)
    assert m.layers[2].mlp.w2.weight[0, :3].tolist() == [-0.009847122244536877, -0.018950767815113068,
                                                         -0.0008450886234641075]
    assert m.embed.weight[5, :2].tolist() == [-0.03788398951292038, 0.0015640617348253727]
    out = m(torch.arange(10)[None] * 7 % 61)
    assert out[0, -1, :4].tolist() == pytest.approx(
        [0.0026923716068267822, -0.09034492075443268, 0.6755945682525635, 0.06277880072593689], abs=1e-6)
    assert out.double().sum().item() == pytest.approx(8.447223840539664, abs=1e-4)
    assert torch.allclose(out.double(), _by_hand(m, torch.arange(10)[None] * 7 % 61, {}, {}), atol=1e-5)


def test_runs_from_before_the_fields_keep_their_identity():
    """Off, the fields are left out of every dump (model.json, checkpoints, run identity, the train
    stage's hash): a run trained before they existed is up to date and resumes."""
    from fmforge.pipeline import stage_settings
    from fmforge.train.identity import run_identity

    old = ["preset", "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "context_length",
           "rope_base", "norm_eps", "tie_embeddings", "qk_norm", "init_std", "zero_init_out", "logit_softcap"]
    r = load_recipe("h200-60s", ["model.value_embeds=0", "model.unet_skips=false"])
    assert list(r.model.model_dump()) == old
    assert list(run_identity(r, "t")["model"]) == old and list(stage_settings(r, "train")["model"]) == old
    on = ModelConfig(vocab_size=V, n_layers=4, value_embeds=2, unet_skips=True)
    assert list(on.model_dump(mode="json")) == old + ["value_embeds", "unet_skips"]
    assert ModelConfig.model_validate_json(on.model_dump_json()) == on


def test_too_many_tables_is_an_error_naming_the_field():
    with pytest.raises(ValueError, match=r"model\.value_embeds: 2 tables .* 2\*value_embeds <= model\.n_layers"):
        ModelConfig(vocab_size=V, n_layers=3, value_embeds=2)
    with pytest.raises(UserError, match=r"model\.value_embeds: 5 tables"):
        load_recipe("h200-60s", ["model.value_embeds=5"])
    with pytest.raises(UserError, match=r"model\.value_embeds"):
        load_recipe("h200-60s", ["model.value_embeds=-1"])
    assert ModelConfig(vocab_size=V, n_layers=4, value_embeds=2).value_embeds == 2  # 2k = n is fine


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fsdp_and_ddp_on_two_ranks_match_one_process_and_resume(corpus_dir, tmp_path):
    """The tables and the (2,)/(1,) scalars under FSDP2 (sharded over 2 ranks, one holding an
    empty piece of a skip weight), DDP and Muon: the losses of one process, and an FSDP
    checkpoint resumes in one process as the same run."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from fmforge.pipeline import Pipeline
    from tests.conftest import write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", corpus_dir, tmp_path / "runs",
                          model={"n_layers": 5, "value_embeds": 2, "unet_skips": True})
    p = Pipeline(load_recipe(recipe), verbose=False)
    for stage in ("collect", "prepare", "tokenizer"):
        getattr(p, stage)()
    sets = ["train.optimizer=muon", "train.max_steps=8", "train.micro_batch=2", "train.global_batch_tokens=512",
            "train.checkpoint_every=4", "train.keep_checkpoints=4"]

    def train(out, nproc, *extra):
        cmd = [sys.executable, "-m", "fmforge", "train", "--recipe", str(recipe), "--out", str(out)]
        cmd += [a for s in sets for a in ("--set", s)] + list(extra)
        if nproc > 1:
            cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
        assert r.returncode == 0, r.stderr[-4000:]
        assert ("resumed from" in r.stderr) == ("--resume" in extra)
        return [json.loads(line)["loss"] for line in open(out / "metrics.jsonl") if '"loss"' in line]

    ref = train(tmp_path / "one", 1)
    assert len(ref) == 8 and ref[-1] < ref[0]
    for strategy in ("fsdp", "ddp"):
        assert train(tmp_path / strategy, 2, "--set", f"train.parallel.strategy={strategy}") == pytest.approx(
            ref, rel=1e-5), strategy
    shutil.copytree(tmp_path / "fsdp", tmp_path / "at1")
    shutil.rmtree(tmp_path / "at1" / "checkpoints" / "step-00000008")
    (tmp_path / "at1" / "model.safetensors").unlink()
    assert train(tmp_path / "at1", 1, "--resume") == pytest.approx(ref, rel=1e-5)


def test_config_show_lists_the_fields_also_when_off():
    """`fmforge config show` is where a user finds every option: the fields left out of the run's
    dumps while off are still shown there, with their off values."""
    from typer.testing import CliRunner

    from fmforge.cli import app

    r = CliRunner().invoke(app, ["config", "show", "--recipe", "h200-60s"])
    assert r.exit_code == 0, r.output
    model = yaml.safe_load(r.output)["model"]
    assert model["value_embeds"] == 0 and model["unet_skips"] is False
