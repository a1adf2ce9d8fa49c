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
