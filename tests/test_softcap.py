"""model.logit_softcap: the training loss, the logits every user of the model sees (eval, serve,
generation), and the export formats that cannot express it refusing before writing anything."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fmforge.config import ModelConfig
from fmforge.errors import UserError
from fmforge.eval.loglik import LM
from fmforge.model.transformer import Transformer
from fmforge.model.weights import save_model
from fmforge.serve.engine import Engine

CAP, V = 2.0, 97


def _model(cap=CAP) -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, d_model=64, n_layers=2, n_heads=4, context_length=32, init_std=0.5,
                      logit_softcap=cap)
    return Transformer(cfg).eval()


def _by_hand(m: Transformer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uncapped, capped) logits: the tied projection and CAP·tanh(z/CAP) written out here."""
    raw = F.linear(m.hidden(x), m.embed.weight).float()
    return raw, CAP * torch.tanh(raw / CAP)


@torch.no_grad()
def test_loss_and_logits_are_the_capped_ones():
    m = _model()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, V, (2, 16), generator=g), torch.randint(0, V, (2, 16), generator=g)
    raw, capped = _by_hand(m, x)
    assert raw.abs().max() > 1.5 * CAP  # the cap bites on this model
    assert torch.allclose(m(x), capped, atol=1e-5)
    assert torch.allclose(m(x, y), F.cross_entropy(capped.reshape(-1, V), y.reshape(-1)), atol=1e-5)
    assert not torch.allclose(m(x, y), F.cross_entropy(raw.reshape(-1, V), y.reshape(-1)), atol=1e-2)
    plain = Transformer(m.cfg.model_copy(update={"logit_softcap": None})).eval()
    plain.load_state_dict(m.state_dict())
    assert torch.allclose(plain(x), raw, atol=1e-5)  # None: the logits as they are


@torch.no_grad()
def test_serving_and_eval_score_with_the_capped_logits():
    m = _model()
    prompt = [3, 14, 15, 92, 65, 35]
    _, capped = _by_hand(m, torch.tensor([prompt]))
    got = Engine(m, 2, 32).prefill([0], [prompt], [True])[0]
    assert torch.allclose(got, capped[0], atol=1e-4)
    ctx, cont = prompt[:4], prompt[4:]
    ll, _ = LM(model=m, tokenizer=None, prefix=[]).loglikelihood_tokens([(ctx, cont)])[0]
    logp = F.log_softmax(capped[0], dim=-1)
    want = float(logp[3, cont[0]] + logp[4, cont[1]])
    assert ll == pytest.approx(want, abs=1e-4)


def test_gguf_cli_refuses_a_capped_model_before_asking_for_its_tokenizer(tmp_path):
    """The soft-cap is why no GGUF can be written; asking first for a tokenizer the user then
    finds would only lead to that refusal."""
    from typer.testing import CliRunner

    from fmforge.cli import app

    m = _model()
    mdir = tmp_path / "train"
    mdir.mkdir()
    save_model(m.state_dict(), m.cfg, mdir)  # no tokenizer.json anywhere near
    r = CliRunner().invoke(app, ["export", "gguf", "--model", str(mdir), "--out", str(tmp_path / "m.gguf")])
    assert isinstance(r.exception, UserError) and "model.logit_softcap=2: GGUF" in str(r.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
