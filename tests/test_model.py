import pytest
import torch

from fmforge.config import ModelConfig
from fmforge.eval.generate import generate
from fmforge.model.flops import count_params, flops_per_token
from fmforge.model.presets import PRESETS
from fmforge.model.transformer import Transformer


@pytest.mark.parametrize("over", [{}, {"tie_embeddings": False}, {"n_kv_heads": 1}, {"qk_norm": True},
                                  {"ffn_dim": 100}])
def test_param_count_matches_the_built_model(over):
    cfg = ModelConfig(vocab_size=300, d_model=64, n_layers=2, n_heads=4, context_length=32, **over)
    model = Transformer(cfg)
    assert count_params(cfg).total == sum(p.numel() for p in model.parameters())


def test_preset_param_counts():
    gpt2 = count_params(ModelConfig(**PRESETS["gpt2-124m"])).total
    assert abs(gpt2 / 124e6 - 1) < 0.01
    llama = count_params(ModelConfig(**PRESETS["llama-65b"])).total
    assert abs(llama / 65.2e9 - 1) < 0.01


def test_flops_formula_hand_checked():
    cfg = ModelConfig(**PRESETS["gpt2-124m"])
    n = count_params(cfg).non_embedding
    assert flops_per_token(cfg, 1024) == 6 * n + 12 * 12 * 768 * 1024


def test_kv_cache_generation_equals_full_forward():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, context_length=40)
    model = Transformer(cfg).eval()
    prompt = [5, 17, 3, 88]
    out = generate(model, prompt, 12)
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(12):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert out == seq[len(prompt):]


def test_causal_no_future_leak():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=2, context_length=16)).eval()
    a = torch.randint(0, 50, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 50
    with torch.no_grad():
        assert torch.equal(model(a)[0, :10], model(b)[0, :10])


def test_zero_init_out_starts_every_block_as_the_identity_and_still_learns():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, context_length=16, tie_embeddings=False,
                      zero_init_out=True)
    model = Transformer(cfg)
    zeroed = [n for n, p in model.named_parameters() if p.dim() == 2 and not p.any()]
    assert sorted(zeroed) == sorted(["lm_head.weight"] + [f"layers.{i}.{m}" for i in range(2)
                                                          for m in ("attn.wo.weight", "mlp.w2.weight")])
    x = torch.randint(0, 50, (4, 16))
    # by hand: identity blocks and a zero head give uniform logits, loss ln(vocab)
    assert model(x, x).item() == pytest.approx(torch.log(torch.tensor(50.0)).item(), abs=1e-6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    assert all(model.layers[i].attn.wo.weight.any() and model.layers[i].mlp.w2.weight.any() for i in range(2))
    # off (the default), nothing is zero
    assert all(p.any() for p in Transformer(cfg.model_copy(update={"zero_init_out": False})).parameters())
