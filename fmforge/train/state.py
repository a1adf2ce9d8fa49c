"""How far a run has gone: the counters a checkpoint stores beside the tensors. No torch here."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class RunState:
    step: int = 0  # optimizer steps taken (skipped non-finite steps not counted)
    tokens: int = 0  # tokens consumed, skipped steps included (the loader moved on)
    elapsed: float = 0.0  # seconds spent in steps, over every resume
    skipped: int = 0  # steps not applied for a non-finite loss or gradient

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, state: dict) -> "RunState":
        return cls(state["step"], state["tokens"], state["elapsed"], state["skipped"])
