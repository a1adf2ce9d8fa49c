"""Parameter counts and FLOPs per token, exactly as the model in transformer.py is built.

The one place this arithmetic lives: the trainer's MFU meter and the cost estimator both
call it. No torch needed.
"""
from __future__ import annotations

from dataclasses import dataclass

from fmforge.config import ModelConfig


@dataclass(frozen=True)
class ParamCount:
    embedding: int  # input token embedding
    lm_head: int  # output projection (0 when tied to the embedding)
    per_layer: int
    n_layers: int
    final_norm: int
    # model.value_embeds' tables: lookup tables like the input embedding, so not in non_embedding
    value_embeds: int = 0
    # value-embedding mixes and U-net skip weights, on some layers only (so not in per_layer);
    # counted with the weights as the norm gains are
    scalars: int = 0

    @property
    def total(self) -> int:
        return (self.embedding + self.lm_head + self.per_layer * self.n_layers + self.final_norm
                + self.value_embeds + self.scalars)

    @property
    def non_embedding(self) -> int:
        """Weights that take part in matmuls: all but the input lookup table (the
        tied/untied output head counts, as in nanoGPT's and PaLM's accounting)."""
        head = self.lm_head if self.lm_head else self.embedding
        return head + self.per_layer * self.n_layers + self.final_norm + self.scalars


def count_params(cfg: ModelConfig, vocab_size: int | None = None) -> ParamCount:
    v = vocab_size or cfg.vocab_size
    if not v:
        raise ValueError("model.vocab_size is not set (it comes from the tokenizer)")
    d, hd = cfg.d_model, cfg.head_dim
    attn = d * cfg.n_heads * hd + 2 * d * cfg.kv_heads * hd + cfg.n_heads * hd * d
    mlp = 3 * d * cfg.hidden_dim
    norms = 2 * d + (2 * hd if cfg.qk_norm else 0)
    return ParamCount(
        embedding=v * d,
        lm_head=0 if cfg.tie_embeddings else v * d,
        per_layer=attn + mlp + norms,
        n_layers=cfg.n_layers,
        final_norm=d,
        value_embeds=cfg.value_embeds * v * cfg.kv_heads * hd,
        # two mixes (a, b) per layer with a table (2k layers), one weight per U-net receiving layer
        scalars=2 * 2 * cfg.value_embeds + (cfg.n_layers // 2 if cfg.unet_skips else 0),
    )


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None, vocab_size: int | None = None) -> float:
    """Training FLOPs per token, PaLM's formula: 6·N + 12·L·d·T.

    N is the non-embedding parameter count (output head included); the second term is the
    attention score and value matmuls at sequence length T (forward + backward, no causal
    discount, as PaLM and nanoGPT count it).
    """
    t = seq_len or cfg.context_length
    n = count_params(cfg, vocab_size).non_embedding
    return 6.0 * n + 12.0 * cfg.n_layers * cfg.d_model * t


def inference_flops_per_token(cfg: ModelConfig, context: int | None = None, vocab_size: int | None = None) -> float:
    """Forward-only FLOPs per generated token at a given context: 2·N + 4·L·d·T."""
    t = context or cfg.context_length
    return 2.0 * count_params(cfg, vocab_size).non_embedding + 4.0 * cfg.n_layers * cfg.d_model * t
