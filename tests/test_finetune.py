"""Fine-tuning: the loss mask, what each method trains, merge, adapters PEFT loads, bad rows."""
from __future__ import annotations

import json
import random

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from fmforge.config import FinetuneConfig, ModelConfig
from fmforge.errors import UserError
from fmforge.finetune.data import IGNORE, bos_id, load_jsonl, pack, row_pieces, encode_pieces
from fmforge.finetune.loop import Runtime, collate, loss_sum, train_loop
from fmforge.finetune.model import apply_method, load_base, load_for_serving
from fmforge.finetune.run import finetune
from fmforge.model.transformer import Transformer
from fmforge.model.weights import save_model
from fmforge.tokenizer.bpe import EOT, PAD

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
CPU = Runtime(torch.device("cpu"), None)


def _rows(n=60, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a = rng.sample(WORDS, 3)
        out.append({"prompt": f"reverse: {' '.join(a)}\n", "completion": " ".join(reversed(a)), "group": f"g{i % 12}"})
    return out


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny fmforge run folder: train/model.safetensors + model.json + tokenizer.json."""
    root = tmp_path_factory.mktemp("ft")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = [r["prompt"] + r["completion"] for r in _rows(200)]
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=[
        EOT, PAD, "<|system|>", "<|user|>", "<|assistant|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    cfg = ModelConfig(vocab_size=320, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, context_length=96)
    torch.manual_seed(0)
    mdir = root / "run" / "train"
    mdir.mkdir(parents=True)
    save_model(Transformer(cfg).state_dict(), cfg, mdir)
    tok.save(str(mdir / "tokenizer.json"))
    return root / "run"


def _cfg(**kw) -> FinetuneConfig:
    base = dict(max_steps=6, micro_batch=8, lr=5e-3, warmup_steps=0, device="cpu", max_length=96,
                sample_prompts=0, lora={"dropout": 0.0})
    return FinetuneConfig(**{**base, **kw})


def test_loss_mask_is_exactly_the_completion_and_eos(run):
    tok = load_base(run).tokenizer
    b = tok.convert_tokens_to_ids(EOT)  # fmforge models start a sequence with <|endoftext|>
    row = {"prompt": "reverse: alpha beta\n", "completion": "beta alpha"}
    ids, labels = encode_pieces(tok, row_pieces(tok, row), b)
    want_completion = tok("beta alpha", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ids == [b] + tok("reverse: alpha beta\n", add_special_tokens=False)["input_ids"] + want_completion
    trained = [i for i, lab in enumerate(labels) if lab != IGNORE]
    assert trained == list(range(len(ids) - len(want_completion), len(ids)))
    assert [ids[i] for i in trained] == want_completion

    # chat: exactly each assistant turn's content + <|endoftext|>; the text is transformers' rendering
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"},
            {"role": "assistant", "content": "hello again"}]
    ids, labels = encode_pieces(tok, row_pieces(tok, {"messages": msgs}), b)
    rendered = tok.apply_chat_template(msgs, tokenize=False)
    assert tok.decode(ids[1:]) == rendered
    want = [t for m in msgs if m["role"] == "assistant"
            for t in tok(m["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert [t for t in labels if t != IGNORE] == want
    # the trained runs sit right after each "<|assistant|>\n" header
    head = tok("<|assistant|>\n", add_special_tokens=False)["input_ids"]
    starts = [i + len(head) for i in range(len(ids)) if ids[i: i + len(head)] == head]
    runs = [i for i in range(len(labels)) if labels[i] != IGNORE and (i == 0 or labels[i - 1] == IGNORE)]
    assert runs == starts


def test_packing_keeps_examples_and_mask_apart(run):
    base = load_base(run)
    tok, model = base.tokenizer, base.model.eval()
    b = bos_id(tok, model.config)
    exs = [encode_pieces(tok, row_pieces(tok, r), b) for r in _rows(6)]
    from fmforge.finetune.data import Example
    exs = [Example(i, lab) for i, lab in exs]
    packed = pack(exs, 96)
    assert len(packed) < len(exs)
    with torch.no_grad():
        got = sum(float(loss_sum(model, collate([p], tok.pad_token_id, CPU.device), CPU)[0]) for p in packed)
        # transformers' own loss, one example at a time (mean over its trained tokens)
        want = sum(float(model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss)
                   * (e.trained_tokens) for e in exs)
    assert got == pytest.approx(want, rel=1e-5)


def test_lora_trains_only_adapters_and_merge_matches(run):
    base = load_base(run)
    tok = base.tokenizer
    frozen = {k: v.clone() for k, v in base.model.state_dict().items()}
    exs = load_jsonl(_write(run.parent / "p.jsonl", _rows()), tok, 96, bos=bos_id(tok, base.model.config)).examples
    net = apply_method(base.model, _cfg(), tok)
    train_loop(net, exs, _cfg(), CPU, tok.pad_token_id, verbose=False)
    after = net.state_dict()
    lora = {k: v for k, v in after.items() if "lora_" in k}
    assert lora and any(not torch.equal(v, torch.zeros_like(v)) for k, v in lora.items() if "lora_B" in k)
    for k, v in frozen.items():  # every base weight bit-identical
        key = next(a for a in after if a.endswith(k.replace(".weight", ".base_layer.weight")) or a.endswith(k))
        assert torch.equal(after[key], v), k
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        adapted = net(input_ids=ids).logits
        merged = net.merge_and_unload()(input_ids=ids).logits
    assert (adapted - merged).abs().max().item() < 1e-5


def test_prompt_tuning_trains_only_virtual_tokens(run):
    base = load_base(run)
    tok = base.tokenizer
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    cfg = _cfg(method="prompt-tuning", prompt_tuning={"virtual_tokens": 4, "init_text": "reverse the words"})
    net = apply_method(base.model, cfg, tok)
    enc = net.prompt_encoder["default"].embedding.weight
    emb = base.model.get_input_embeddings().weight
    init_ids = (tok("reverse the words", add_special_tokens=False)["input_ids"] * 4)[:4]
    assert torch.equal(enc.detach(), emb[init_ids].detach())  # initialised from the text
    start = enc.detach().clone()
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable == ["prompt_encoder.default.embedding.weight"]
    exs = load_jsonl(_write(run.parent / "p.jsonl", _rows()), tok, 96, bos=bos_id(tok, base.model.config)).examples
    train_loop(net, exs, cfg, CPU, tok.pad_token_id, verbose=False)
    assert not torch.equal(enc.detach(), start)
    for k, v in base.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_cli_run_adapter_loads_with_peft_and_serves(run, tmp_path):
    from peft import PeftModel

    from fmforge.export.writer import export_hf

    data = _write(tmp_path / "pairs.jsonl", _rows(80))
    out = tmp_path / "out"
    rep = finetune(run, data, out, _cfg(max_steps=40, merge=True, sample_prompts=1, max_new_tokens=4), verbose=False)
    saved = json.loads((out / "finetune_report.json").read_text())
    assert saved["tuned_eval_loss"] < saved["base_eval_loss"] == rep["base_eval_loss"]
    # rank 8 x (in + out) of q, k, v, o, gate, up, down (d 32, kv 16, ffn 128), 2 layers
    assert saved["trainable_params"] == 8 * (64 + 48 + 48 + 64 + 160 + 160 + 160) * 2
    hf = tmp_path / "hf"
    hf.mkdir()
    export_hf(run, hf)
    plain = transformers.AutoModelForCausalLM.from_pretrained(hf)
    adapted = PeftModel.from_pretrained(plain, out / "adapter").eval()
    merged = transformers.AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    ids = torch.randint(0, 300, (1, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, m = adapted(input_ids=ids).logits, merged(input_ids=ids).logits
    assert (a - m).abs().max().item() < 1e-5
    net, tok = load_for_serving(out / "adapter")  # the base recorded in the adapter
    with torch.no_grad():
        assert (net(ids) - m).abs().max().item() < 1e-4
    assert tok.get_vocab_size() == 300
    # `fmforge serve --model RUN --adapter OUT/adapter` serves that model
    from fmforge.serve.load import load_served_model
    served, stok = load_served_model(run, "cpu", "float32", adapter=out / "adapter")
    with torch.no_grad():
        assert (served(ids) - m).abs().max().item() < 1e-4
    assert stok.get_vocab_size() == 300
    assert "| held-out completion loss" in (out / "finetune_report.md").read_text()


def test_bad_rows_named_by_line(run, tmp_path):
    rows = _rows(20)
    rows[2] = {"messages": [{"role": "robot", "content": "x"}]}
    rows[6] = {"prompt": "reverse: a b"}
    rows[9] = "{not json"
    data = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError) as e:
        finetune(run, data, tmp_path / "o1", _cfg(max_bad_fraction=0.1), verbose=False)
    msg = str(e.value)
    assert "3 of 20 rows are bad" in msg and "line 3: messages[0].role" in msg
    assert "line 7: completion" in msg and "line 10: not JSON" in msg
    rep = finetune(run, data, tmp_path / "o2", _cfg(max_bad_fraction=0.2, max_steps=1), verbose=False)
    assert [b["line"] for b in rep["bad_rows"]] == [3, 7, 10]


def test_too_long_policy(run, tmp_path):
    tok = load_base(run).tokenizer
    long = {"prompt": "alpha " * 60 + "\n", "completion": "beta gamma"}
    data = _write(tmp_path / "long.jsonl", [long, _rows(1)[0]])
    ds = load_jsonl(data, tok, 24, "truncate-prompt", bos=0)
    assert ds.truncated == 1 and len(ds.examples[0].input_ids) == 24 and ds.examples[0].input_ids[0] == 0
    want = tok("beta gamma", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert [t for t in ds.examples[0].labels if t != IGNORE] == want
    ds = load_jsonl(data, tok, 24, "drop", bos=0)
    assert [b.line for b in ds.bad] == [1] and "finetune.max_length 24" in ds.bad[0].reason


def test_the_default_max_length_is_fitted_to_the_models_context(run, tmp_path, capfd):
    """The default finetune.max_length (512) is over this model's 96-token context: rows longer
    than the context would put tokens at positions it never trained on. They are fitted to it."""
    tok = load_base(run).tokenizer
    long = {"prompt": "alpha " * 150 + "\n", "completion": "beta gamma"}
    n = 1 + len(tok(long["prompt"] + long["completion"], add_special_tokens=False)["input_ids"]) + 1
    assert 96 < n <= 512  # fits the default, not the context
    data = _write(tmp_path / "d.jsonl", [long] * 4 + _rows(20))
    assert FinetuneConfig().max_length == 512
    rep = finetune(run, data, tmp_path / "out", _cfg(max_length=512, max_steps=1), verbose=True)
    assert rep["config"]["max_length"] == 96 and rep["data"]["train"]["truncated"] == 4
    assert "finetune.max_length 512 is over the model's context (96 tokens)" in capfd.readouterr().err
    rep = finetune(run, data, tmp_path / "pt", _cfg(max_length=512, max_steps=1, method="prompt-tuning"), verbose=False)
    assert rep["config"]["max_length"] == 96 - 20  # the virtual tokens take their share of the context


def test_too_many_virtual_tokens_says_what_fits_not_a_negative_count():
    """200 virtual tokens on a 96-token model said "leaves -104 of the model's 96-token
    context": a count no one can act on. The error names the setting, the context and how
    many virtual tokens fit (96 - the 8 tokens an example needs at least = 88)."""
    import re
    from types import SimpleNamespace
    from fmforge.finetune.model import within_context

    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=96))
    cfg = _cfg(method="prompt-tuning", prompt_tuning={"virtual_tokens": 200})
    with pytest.raises(UserError) as e:
        within_context(cfg, model)
    msg = str(e.value)
    assert "finetune.prompt_tuning.virtual_tokens 200" in msg and "96-token context" in msg
    assert "finetune.max_length 96" in msg and "at most 88 virtual tokens" in msg
    assert not re.search(r"-\d", msg), msg
    tiny = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8))
    with pytest.raises(UserError) as e:
        within_context(_cfg(method="prompt-tuning", prompt_tuning={"virtual_tokens": 4}), tiny)
    assert "too short" in str(e.value) and not re.search(r"-\d", str(e.value))


SOURCE = '''import os

def top(a, b=1):
    """Add them."""
    c = a + b
    return c

class K:
    @staticmethod
    def meth(
        x,
    ):
        """Twice x.

        Long doc.
        """
        if x:
            return 2 * x

    def nodoc(self):
        return 1

    def only_doc(self):
        """Nothing else."""
'''


def test_function_pairs_by_hand():
    from fmforge.finetune.pairs import function_pairs

    got = sorted(function_pairs(SOURCE), key=lambda p: p["prompt"])
    assert got == [
        {"prompt": 'def meth(\n    x,\n):\n    """Twice x.\n\n    Long doc.\n    """\n',
         "completion": "    if x:\n        return 2 * x\n"},
        {"prompt": 'def top(a, b=1):\n    """Add them."""\n', "completion": "    c = a + b\n    return c\n"},
    ]


def test_pipeline_finetune_stage(tmp_path, corpus_dir):
    from conftest import write_recipe

    from fmforge.config import load_recipe
    from fmforge.pipeline import Pipeline

    ft = {"enabled": True, "data": "corpus-functions", "max_length": 64, "max_steps": 3, "micro_batch": 4,
          "max_eval_examples": 10, "sample_prompts": 1, "max_new_tokens": 4, "device": "cpu", "too_long": "drop"}
    path = write_recipe(tmp_path / "r.yaml", corpus_dir, tmp_path / "runs", finetune=ft)
    rep = Pipeline(load_recipe(path), verbose=False).run_all()
    f = rep["finetune"]
    out = tmp_path / "runs" / "t" / "finetune"
    train = [json.loads(x) for x in (out / "pairs-train.jsonl").read_text().splitlines()]
    held = [json.loads(x) for x in (out / "pairs-eval.jsonl").read_text().splitlines()]
    assert train and held and not {r["group"] for r in train} & {r["group"] for r in held}
    assert f["pairs"]["train_pairs"] == len(train) and f["eval_examples"] == min(10, len(held))
    assert json.loads((out / "finetune_report.json").read_text())["base_eval_loss"] == f["base_eval_loss"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert "finetune (lora) held-out loss" in (tmp_path / "runs" / "t" / "report.md").read_text()
    # up to date: skipped; a LoRA setting re-runs only the finetune stage
    p = Pipeline(load_recipe(path), verbose=False)
    p.run_all()
    assert all(r.skipped for r in p.runs)
    p = Pipeline(load_recipe(path, ["finetune.lora.r=4"]), verbose=False)
    p.run_all()
    assert [r.name for r in p.runs if not r.skipped] == ["finetune"]


def test_gpt2_folder_lora(run, tmp_path):
    """A local HF GPT-2-family folder (Conv1D layers): LoRA trains, the adapter loads with PEFT."""
    from peft import PeftModel
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(run / "train" / "tokenizer.json"), eos_token=EOT,
                                  bos_token=EOT, pad_token=PAD)
    torch.manual_seed(0)
    hf = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=320, n_positions=96, n_embd=32, n_layer=2, n_head=2)).save_pretrained(hf)
    tok.save_pretrained(hf)
    rep = finetune(hf, _write(tmp_path / "p.jsonl", _rows()), tmp_path / "out", _cfg(max_steps=20), verbose=False)
    assert rep["architecture"] == "GPT2LMHeadModel" and rep["tuned_eval_loss"] < rep["base_eval_loss"]
    # c_attn (32 -> 96), attn c_proj and mlp c_proj, c_fc (32 -> 128): rank 8 x (in + out), 2 layers
    assert rep["trainable_params"] == 8 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32)) * 2
    PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(hf), tmp_path / "out" / "adapter")


def test_recipe_extends(tmp_path):
    from fmforge.config import RecipeError, load_recipe

    r = load_recipe("demo-finetune")
    demo = load_recipe("demo")
    assert r.model_dump(exclude={"finetune"}) == demo.model_dump(exclude={"finetune"})  # shares the demo's stages
    assert r.finetune.enabled and r.finetune.data == "corpus-functions" and r.finetune.lora.dropout == 0.0
    (tmp_path / "a.yaml").write_text("extends: b\ntrain: {lr: 0.5}\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="extends itself"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("name: bee\ntrain: {max_steps: 7, lr: 0.1}\n")
    r = load_recipe(tmp_path / "a.yaml")
    assert (r.name, r.train.max_steps, r.train.lr) == ("bee", 7, 0.5)


def test_batches_cover_every_example_once_per_epoch_with_little_padding():
    from fmforge.finetune.data import Example, batches

    rng = random.Random(3)
    exs = [Example([1] * rng.randrange(5, 200), [IGNORE] * 0, line=i) for i in range(1000)]
    for epoch in (0, 1):
        got = [e.line for b in batches(exs, 8, 0, epoch) for e in b]
        assert sorted(got) == list(range(1000))
    pad = sum(8 * max(len(e.input_ids) for e in b) - sum(len(e.input_ids) for e in b) for b in batches(exs, 8, 0, 0))
    assert pad < 0.1 * sum(len(e.input_ids) for e in exs)
    assert [e.line for b in batches(exs, 8, 0, 0) for e in b] != [e.line for b in batches(exs, 8, 0, 1) for e in b]


def test_cli_lora_merge_report_and_task(run, tmp_path):
    """The interface outside checks use: `fmforge finetune ... --method lora --out OUT --merge`
    leaves OUT/adapter (PEFT), OUT/merged (transformers) and finetune_report.json; the progress
    line (verbose) is pretraining's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    data = _write(tmp_path / "pairs.jsonl", _rows(80))
    out = tmp_path / "out"
    sets = ["finetune.max_steps=30", "finetune.device=cpu", "finetune.lr=5e-3", "finetune.warmup_steps=0",
            "finetune.max_length=96", "finetune.lora.dropout=0", "finetune.sample_prompts=1",
            "finetune.max_new_tokens=4", "finetune.eval_task_examples=5"]
    r = subprocess.run([sys.executable, "-m", "fmforge", "finetune", "--model", str(run), "--data", str(data),
                        "--method", "lora", "--out", str(out), "--merge", "--eval-task", "exact-match",
                        *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[finetune] done: 30 steps" in r.stderr and "held-out loss" in r.stdout
    rep = json.loads((out / "finetune_report.json").read_text())
    assert rep["tuned_eval_loss"] < rep["base_eval_loss"]
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()
    assert rep["outputs"] == {"adapter": "adapter", "merged": "merged"}
    for key in ("base_task", "tuned_task"):
        t = rep[key]
        assert t["task"] == "exact-match" and t["examples"] == 5 and t["score"] * 5 == round(t["score"] * 5)
    assert "| exact-match (5 examples) |" in (out / "finetune_report.md").read_text()
    assert rep["trainable_percent"] == pytest.approx(100 * rep["trainable_params"] / rep["total_params"])
    assert rep["tokens_per_s"] > 0 and rep["peak_memory_gb"] > 0 and rep["cost"]["device_hours"] > 0


@pytest.mark.parametrize("method,packing", [("lora", False), ("lora", True), ("full", False),
                                            ("prompt-tuning", False)])
def test_chunked_loss_gives_the_same_steps(run, tmp_path, monkeypatch, method, packing):
    """finetune.loss_chunk_tokens: the head applied a chunk at a time to the hidden states (frozen
    under LoRA and prompt tuning, trained and tied in full fine-tuning; after the virtual tokens of
    prompt tuning; packed rows) gives the losses and gradient norms of the unchunked loss."""
    from fmforge.model.chunked_loss import ChunkedLinearCrossEntropy

    calls = []
    apply = ChunkedLinearCrossEntropy.apply
    monkeypatch.setattr(ChunkedLinearCrossEntropy, "apply", lambda *a: calls.append(a[3]) or apply(*a))
    logs = []
    for chunk in (None, 50):
        base = load_base(run)
        tok = base.tokenizer
        exs = load_jsonl(_write(tmp_path / "p.jsonl", _rows()), tok, 96, bos=bos_id(tok, base.model.config)).examples
        cfg = _cfg(method=method, packing=packing, loss_chunk_tokens=chunk, max_steps=4,
                   prompt_tuning={"virtual_tokens": 4})
        rows = pack(exs, 96) if packing else exs
        torch.manual_seed(0)
        out = tmp_path / f"c{chunk}"
        out.mkdir()
        train_loop(apply_method(base.model, cfg, tok), rows, cfg, CPU, tok.pad_token_id, out, verbose=False)
        logs.append([json.loads(line) for line in open(out / "metrics.jsonl")])
    assert len(calls) == 4 and set(calls) == {50}
    for key in ("loss", "grad_norm"):
        assert [m[key] for m in logs[1]] == pytest.approx([m[key] for m in logs[0]], rel=1e-5), key


def test_chunked_loss_refuses_a_lora_adapter_on_the_head(run):
    base = load_base(run)
    cfg = _cfg(loss_chunk_tokens=50, lora={"target_modules": ["q_proj", "lm_head"]})
    net = apply_method(base.model, cfg, base.tokenizer)
    with pytest.raises(UserError, match=r"finetune\.loss_chunk_tokens: .*lm_head"):
        train_loop(net, [], cfg, CPU, base.tokenizer.pad_token_id, verbose=False)


def test_an_hf_folder_that_is_not_a_model_is_a_user_error(run, tmp_path):
    """--model DIR with a config.json transformers cannot read, or without readable weights,
    was a traceback (transformers' ValueError / OSError, safetensors' SafetensorError) and
    left --out behind holding only fmforge's lock: a one-line error naming the folder, no OUT."""
    from typer.testing import CliRunner
    from fmforge.cli import app
    from fmforge.export.writer import export_hf
    good = tmp_path / "hf"
    good.mkdir()
    export_hf(run, good)
    cases = {"no-model-type": {"config.json": "{}"},
             "bad-json": {"config.json": "{not json"},
             "no-weights": {"config.json": (good / "config.json").read_text()},
             "bad-weights": {"config.json": (good / "config.json").read_text(), "model.safetensors": "garbage"}}
    data = _write(tmp_path / "d.jsonl", _rows(10))
    for name, files in cases.items():
        d = tmp_path / name
        d.mkdir()
        for f, text in files.items():
            (d / f).write_text(text)
        with pytest.raises(UserError, match=name):
            load_base(d)
        out = tmp_path / f"out-{name}"
        r = CliRunner().invoke(app, ["finetune", "--model", str(d), "--data", str(data), "--out", str(out),
                                     "--set", "finetune.device=cpu"])
        assert isinstance(r.exception, UserError) and name in str(r.exception), r.exception
        assert not out.exists(), name
