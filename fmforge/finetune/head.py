"""finetune.loss_chunk_tokens: the fine-tuned model's output head and loss in chunks of tokens.

A transformers causal LM makes the logits of every position in its forward (`lm_head`), so
for one forward its head is swapped for the identity: the "logits" it returns are then the
final hidden states, and fmforge.model.chunked_loss applies the head's weight to them a
chunk at a time. The families fine-tuning knows (model.LORA_TARGETS) do nothing to the
logits after `lm_head`; a head that is not a plain bias-free Linear (a LoRA adapter on it,
a family with a bias or a soft-cap) is refused, naming the field.
"""
from __future__ import annotations

import contextlib

import torch

from fmforge.errors import UserError
from fmforge.finetune.model import LORA_TARGETS


def _causal_lm(model) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def check_chunked_head(model) -> None:
    """Refuse, before training, a model whose head the chunked loss cannot stand in for."""
    lm = _causal_lm(model)
    head, mt = getattr(lm, "lm_head", None), lm.config.model_type
    if mt not in LORA_TARGETS or type(head) is not torch.nn.Linear or head.bias is not None:
        raise UserError(f"finetune.loss_chunk_tokens: needs a {'/'.join(LORA_TARGETS)} model whose lm_head is a "
                        f"bias-free Linear (got model type {mt!r}, lm_head {type(head).__name__}; a LoRA adapter "
                        "on lm_head is not supported); unset finetune.loss_chunk_tokens")


@contextlib.contextmanager
def hidden_states_out(model):
    """Within: the model's forward returns the final hidden states as its logits. Yields the
    head's weight (a frozen base's or, tied or not, the trained one)."""
    lm = _causal_lm(model)
    head = lm.lm_head
    lm.lm_head = torch.nn.Identity()
    try:
        yield head.weight
    finally:
        lm.lm_head = head
