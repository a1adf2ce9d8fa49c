"""What a training run *is*, apart from how far it goes.

A run's identity is what decides its result step by step: the token shards, the tokenizer
and model settings, and every train field except the budget (how far to go) and the
result-neutral ones (how it is carried out or watched); both lists are declared on
``TrainConfig``. Checkpoints store the identity; a resume with another identity is
refused, a resume with another budget continues the run. The pipeline can use the same
functions to tell "up to date" from "resume" from "start afresh". No torch here.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from fmforge.config import Recipe, TrainConfig

_TOKENIZER_NEUTRAL = ("workers",)
_EDGE = 1 << 20  # bytes hashed at each end of a shard


def tokens_fingerprint(tokens_dir: Path) -> str:
    """A cheap fingerprint of a folder of token shards: each shard's name, size, and the
    hash of its first and last MiB (header, first tokens, offsets). Re-encoding with other
    settings changes it; hashing tens of GB on every start would not be worth it."""
    h = hashlib.sha256()
    for p in sorted(Path(tokens_dir).glob("*.bin")):
        size = p.stat().st_size
        h.update(f"{p.name}:{size}:".encode())
        with open(p, "rb") as f:
            h.update(f.read(_EDGE))
            if size > _EDGE:
                f.seek(max(_EDGE, size - _EDGE))
                h.update(f.read(_EDGE))
    return h.hexdigest()[:16]


def run_identity(recipe: Recipe, tokens_fingerprint: str) -> dict:
    """Everything that must be equal for a checkpoint to be continued (JSON-able)."""
    train = recipe.train.model_dump(mode="json")
    for name in TrainConfig.BUDGET_FIELDS + TrainConfig.NEUTRAL_FIELDS:
        train.pop(name)
    tok = recipe.tokenizer.model_dump(mode="json")
    for name in _TOKENIZER_NEUTRAL:
        tok.pop(name)
    return {"tokens": tokens_fingerprint, "tokenizer": tok, "model": recipe.model.model_dump(mode="json"),
            "train": train}


def budget(recipe: Recipe) -> dict:
    return {name: getattr(recipe.train, name) for name in TrainConfig.BUDGET_FIELDS}


def differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """'section.field (was A, now B)' for each leaf that differs, in a stable order."""
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, name + ".")
        elif a != b:
            out.append(f"{name} (was {a!r}, now {b!r})" if key != "tokens" else
                       "the token shards (another tokenizer or data)")
    return out
