"""HF export: transformers computes fmforge's logits; tokenizer, chat template, sharding, import."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders

from fmforge.config import ModelConfig
from fmforge.errors import UserError
from fmforge.export.hf import load_hf_as_fmforge, read_hf_config
from fmforge.export.writer import export_hf
from fmforge.model.transformer import Transformer
from fmforge.model.weights import save_model
from fmforge.tokenizer.bpe import EOT, PAD
from fmforge.tokenizer.chat import render_chat

transformers = pytest.importorskip("transformers")
TEXT = ["the quick brown fox jumps over the lazy dog " * 20, "hello world, this is fmforge. " * 20]


def _make(tmp_path, qk_norm: bool, tie: bool = True):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=300, special_tokens=[EOT, PAD],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    cfg = ModelConfig(vocab_size=320, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, context_length=64,
                      qk_norm=qk_norm, tie_embeddings=tie)
    torch.manual_seed(0)
    net = Transformer(cfg)
    with torch.no_grad():  # norm gains off 1 so a mis-mapped norm shows in the logits
        for n, p in net.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    mdir = tmp_path / "run" / "train"
    mdir.mkdir(parents=True)
    save_model(net.state_dict(), cfg, mdir)
    tok.save(str(mdir / "tokenizer.json"))
    return net.eval(), tok, mdir


@pytest.mark.parametrize("qk_norm,tie,arch", [(False, True, "LlamaForCausalLM"), (True, False, "Qwen3ForCausalLM")])
def test_hf_logits_tokenizer_chat(tmp_path, qk_norm, tie, arch):
    net, tok, mdir = _make(tmp_path, qk_norm, tie)
    out = tmp_path / "hf"
    out.mkdir()
    export_hf(tmp_path / "run", out)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    assert type(hf).__name__ == arch
    ids = torch.randint(0, 320, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (hf(ids).logits - net(ids)).abs().max().item()
    assert diff < 1e-4
    htok = transformers.AutoTokenizer.from_pretrained(out)
    s = "the lazy fox says hello, world!"
    assert htok(s)["input_ids"] == tok.encode(s).ids
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert htok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == render_chat(msgs)
    assert "parameters" in (out / "README.md").read_text()


def test_sharded_and_lossless_import(tmp_path):
    net, tok, mdir = _make(tmp_path, True)
    out = tmp_path / "hf"
    out.mkdir()
    files = export_hf(mdir, out, shard_bytes=60_000)
    assert "model.safetensors.index.json" in files and not (out / "model.safetensors").exists()
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    ids = torch.arange(30).view(1, 30)
    with torch.no_grad():
        assert (hf(ids).logits - net(ids)).abs().max().item() < 1e-4
    back, btok = load_hf_as_fmforge(out)
    orig = load_file(str(mdir / "model.safetensors"))
    got = back.state_dict()
    assert set(orig) == set(got)
    for k, v in orig.items():
        assert torch.equal(v, got[k]), k
    assert btok.encode("hello").ids == tok.encode("hello").ids


def test_import_refuses_bias_and_rope_scaling(tmp_path):
    net, tok, mdir = _make(tmp_path, False)
    out = tmp_path / "hf"
    out.mkdir()
    export_hf(mdir, out)
    import json
    c = json.loads((out / "config.json").read_text())
    c["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    (out / "config.json").write_text(json.dumps(c))
    with pytest.raises(UserError, match="rope_scaling"):
        read_hf_config(out)


def test_cli_export_import_and_gguf_format(tmp_path):
    from typer.testing import CliRunner
    from fmforge.cli import app
    net, tok, mdir = _make(tmp_path, True)
    r = CliRunner().invoke(app, ["export", "--model", str(tmp_path / "run"), "--format", "hf",
                                 "--out", str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")])
    assert r.exit_code == 0, r.output
    orig, back = load_file(str(mdir / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert orig.keys() == back.keys() and all(torch.equal(orig[k], back[k]) for k in orig)
    # --format gguf (the same as `export gguf`) writes one file; this tokenizer is GPT-2's
    # byte-level split, llama.cpp's "gpt-2" pre-tokenizer (tests/test_export_gguf.py checks the rest)
    gguf = pytest.importorskip("gguf")
    r = CliRunner().invoke(app, ["export", "--model", str(tmp_path / "run"), "--format", "gguf",
                                 "--out", str(tmp_path / "m.gguf")])
    assert r.exit_code == 0, r.output
    assert gguf.GGUFReader(tmp_path / "m.gguf").fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    r = CliRunner().invoke(app, ["export", "hf", "--model", str(tmp_path / "run"), "--format", "gguf",
                                 "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, UserError) and "two different formats" in str(r.exception)


def test_model_card_of_a_run(small_recipe, tmp_path):
    """`fmforge export --model RUN`: the card states the data, parameters, tokens trained,
    evaluation and cost of the run that trained the model."""
    import json
    import yaml
    from typer.testing import CliRunner
    from fmforge.cli import app
    from fmforge.config import load_recipe
    from fmforge.pipeline import Pipeline
    Pipeline(load_recipe(small_recipe, []), verbose=False).run_all()
    rec = yaml.safe_load(small_recipe.read_text())
    run = tmp_path / "runs" / rec["name"]
    r = CliRunner().invoke(app, ["export", "--model", str(run), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    card = (tmp_path / "hf" / "README.md").read_text()
    rows = dict(line.strip("|").split(" | ", 1) for line in card.splitlines() if line.startswith("| ") and " | " in line)
    rows = {k.strip(): v.strip(" |") for k, v in rows.items()}
    params = sum(t.numel() for t in load_file(str(run / "train" / "model.safetensors")).values())
    assert f"{params:,} parameters" in card and rows["params"] == f"{params:,}"
    t = rec["train"]
    assert rows["tokens trained"] == f"{t['max_steps'] * t['micro_batch'] * rec['model']['context_length']:,}"
    assert rows["data sources"].startswith(rec["data"]["sources"][0])
    ev = json.loads((run / "eval" / "stage.json").read_text())["summary"]
    assert rows["val loss (nats/token)"] == f"{ev['val_loss']:.4f}" and rows["cost"].endswith("device-h, $—")
    assert rows["tokenizer vocab"] == "512" and "val bits/byte (model)" in rows


@pytest.mark.parametrize("over, field", [(dict(logit_softcap=2.0), "model.logit_softcap=2"),
                                         (dict(value_embeds=1), "model.value_embeds=1"),
                                         (dict(unet_skips=True), "model.unet_skips=true")])
def test_hf_and_gguf_export_refuse_what_the_formats_cannot_express(tmp_path, over, field):
    """Llama/Qwen3 (HF, GGUF) have no logit soft-cap, value embeddings or U-net skips: such a
    model is refused before anything is written, never exported as another model."""
    from fmforge.export.gguf_file import write_gguf

    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, context_length=16, **over))
    mdir = tmp_path / "train"
    mdir.mkdir()
    save_model(m.state_dict(), m.cfg, mdir)
    with pytest.raises(UserError, match=f"{field}: Hugging Face"):
        export_hf(mdir, tmp_path / "hf")
    with pytest.raises(UserError, match=f"{field}: GGUF"):
        write_gguf(mdir, tmp_path / "tokenizer.json", tmp_path / "m.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
