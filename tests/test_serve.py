"""The serving engine: greedy decoding with the slot KV cache gives exactly the tokens of
recomputing the whole sequence without a cache, for prompts of different lengths batched together."""
import torch

from fmforge.config import ModelConfig
from fmforge.model.transformer import Transformer
from fmforge.serve.engine import greedy


def test_cached_greedy_equals_recomputation():
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, context_length=64, vocab_size=97, qk_norm=True,
                      init_std=0.2)
    model = Transformer(cfg).eval()
    prompts = [[1, 5, 9], [3, 4, 5, 6, 7, 8, 2], [11]]
    got = greedy(model, prompts, 12)
    for p, g in zip(prompts, got):
        seq = list(p)
        with torch.no_grad():
            for _ in range(12):
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        assert g == seq[len(p):]
