"""A checkpoint saved or loaded in one process prints no DCP "assuming ... a single process"
warning (one process is what we ask for), and every other warning still gets through."""
from __future__ import annotations

import warnings

import torch

from fmforge.config import ModelConfig
from fmforge.model.transformer import Transformer
from fmforge.train import checkpoint

NOISE = "assuming the intent is to"


def _model_and_opt():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, context_length=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 64, (1, 8))).float().mean().backward()
    opt.step()
    return model, opt


def test_a_single_process_save_and_load_print_no_dcp_warning(tmp_path):
    model, opt = _model_and_opt()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        path = checkpoint.save(tmp_path, 1, model, opt, {"step": 1}, keep=2)
        fresh, fresh_opt = _model_and_opt()
        checkpoint.restore(path, fresh, fresh_opt)
        whole = checkpoint.consolidate(path)
    assert not [str(w.message) for w in seen if NOISE in str(w.message)]
    assert all(torch.equal(whole[k], v) for k, v in model.state_dict().items() if k in whole)


def test_other_warnings_during_a_save_still_show(tmp_path, monkeypatch):
    import torch.distributed.checkpoint as dcp

    real = dcp.save

    def save(*a, **k):
        warnings.warn("disk nearly full", UserWarning)
        return real(*a, **k)

    monkeypatch.setattr(dcp, "save", save)
    model, opt = _model_and_opt()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        checkpoint.save(tmp_path, 1, model, opt, {"step": 1}, keep=2)
    assert [str(w.message) for w in seen if "disk" in str(w.message)] == ["disk nearly full"]
