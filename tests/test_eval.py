import math

import numpy as np
import torch

from fmforge.eval.heldout import bits_per_byte, compressor_bpb, score_docs, windows


class Uniform(torch.nn.Module):
    """A model that gives every token the same probability 1/V."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x, y, reduction="sum"):
        logits = torch.zeros(*x.shape, self.vocab)
        return torch.nn.functional.cross_entropy(logits.view(-1, self.vocab), y.reshape(-1), ignore_index=-100,
                                                 reduction=reduction)


def test_bits_per_byte_by_hand():
    # 8 bits for each of 10 bytes = 80 bits = 80·ln 2 nats
    assert math.isclose(bits_per_byte(80 * math.log(2), 10), 8.0)


def test_uniform_model_bpb_is_log2_vocab_times_tokens_per_byte():
    # two documents: [EOT] + 5 ids (12 bytes) and [EOT] + 3 ids (4 bytes); 8 predicted tokens,
    # each costs log2(16) = 4 bits, so 32 bits over 16 bytes = 2.0 bits per byte
    docs = [(np.array([0, 1, 2, 3, 4, 5]), 12), (np.array([0, 7, 8, 9]), 4)]
    res = score_docs(Uniform(16), docs, context=4, device=torch.device("cpu"), batch_size=3)
    assert res.tokens == 8 and res.bytes == 16
    assert math.isclose(res.bpb, 2.0, rel_tol=1e-6)
    assert math.isclose(res.loss, math.log(16), rel_tol=1e-6)


def test_windows_score_every_token_once():
    ids = np.arange(23)
    for ctx, stride in [(4, 4), (4, 2), (8, 3), (30, 30)]:
        scored = []
        for w, first in windows(ids, ctx, stride):
            assert len(w) <= ctx + 1
            scored.extend(w[1 + first:].tolist())
        assert scored == list(range(1, 23))


def test_compressor_baselines_are_sane():
    text = "def f(x):\n    return x + 1\n" * 50
    b = compressor_bpb([text])
    assert 0 < b["xz_bpb"] < 8 and 0 < b["gzip_bpb"] < 8 and b["baseline_bytes"] == len(text)


# ---------------------------------------------------------------- a trained model on disk, broken

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from fmforge.config import ModelConfig  # noqa: E402
from fmforge.errors import UserError  # noqa: E402
from fmforge.model.transformer import Transformer  # noqa: E402
from fmforge.model.weights import load_model, save_model  # noqa: E402

TINY = dict(vocab_size=64, d_model=16, n_layers=1, n_heads=2, context_length=16)


def _saved(folder: Path, **over) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig(**{**TINY, **over})
    torch.manual_seed(0)
    save_model(Transformer(cfg).state_dict(), cfg, folder)
    return folder


def test_a_saved_model_loads_back_with_the_same_weights(tmp_path):
    d = _saved(tmp_path / "train")
    torch.manual_seed(0)
    want = Transformer(ModelConfig(**TINY)).state_dict()
    got = load_model(d).state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


BROKEN = {
    "no folder": (lambda d: __import__("shutil").rmtree(d), "model.json"),
    "no model.json": (lambda d: (d / "model.json").unlink(), "model.json"),
    "no model.safetensors": (lambda d: (d / "model.safetensors").unlink(), "model.safetensors"),
    "truncated model.json": (lambda d: _truncate(d / "model.json"), "model.json"),
    "model.json not an object": (lambda d: (d / "model.json").write_text("[1, 2]"), "model.json"),
    "model.json wrong field": (lambda d: (d / "model.json").write_text(json.dumps({**TINY, "d_model": "wide"})),
                               "d_model"),
    "model.json no vocab_size": (lambda d: (d / "model.json").write_text(json.dumps({**TINY, "vocab_size": None})),
                                 "vocab_size"),
    "garbage model.safetensors": (lambda d: (d / "model.safetensors").write_bytes(b"\x00\xff" * 50),
                                  "model.safetensors"),
    "empty model.safetensors": (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors"),
    "truncated model.safetensors": (lambda d: _truncate(d / "model.safetensors", 0.7), "model.safetensors"),
    "weights of another shape": (lambda d: _saved(d.parent / "other", d_model=32) and
                                 (d / "model.safetensors").write_bytes((d.parent / "other" / "model.safetensors").read_bytes()),
                                 "model.safetensors"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_broken_model_is_a_user_error_naming_the_file_and_the_command(tmp_path, case):
    d = _saved(tmp_path / "train")
    damage, names = BROKEN[case]
    damage(d)
    with pytest.raises(UserError) as e:
        load_model(d)
    msg = str(e.value)
    assert names in msg and "fmforge train" in msg and "\n" not in msg, msg
