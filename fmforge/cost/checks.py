"""Checks for the numbers the cost commands take, each raising CostError naming the flag.

The library functions (estimate, plan, serve_cost, ...) call these themselves, so a caller
that skips the CLI gets the same refusal instead of a division by zero or a negative bill.
NaN and infinity are refused everywhere: no figure can be computed from them.
"""
from __future__ import annotations

import math

from fmforge.errors import UserError


class CostError(UserError):
    """Input the estimator cannot use; the message is one line that names it."""


def _finite(value, flag: str, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise CostError(f"{flag}: expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise CostError(f"{flag} must be {what}, got {value!r}")
    return x


def positive(value, flag: str) -> float:
    """> 0: tokens, parameters, days, a budget."""
    x = _finite(value, flag, "a positive number")
    if x <= 0:
        raise CostError(f"{flag} must be positive, got {value!r}")
    return x


def non_negative(value, flag: str) -> float:
    """>= 0: a price (free hardware is a price), a grid's carbon intensity."""
    x = _finite(value, flag, "a number >= 0")
    if x < 0:
        raise CostError(f"{flag} must be 0 or more, got {value!r}")
    return x


def count(value, flag: str) -> int:
    """A whole number >= 1: devices, a micro-batch, a sequence length, a LoRA rank."""
    x = _finite(value, flag, "a whole number >= 1")
    if x < 1 or x != int(x):
        raise CostError(f"{flag} must be a whole number >= 1, got {value!r}")
    return int(x)


def fraction(value, flag: str) -> float:
    """In (0, 1]: MFU, utilization."""
    x = _finite(value, flag, "in (0, 1]")
    if not 0 < x <= 1:
        raise CostError(f"{flag} must be in (0, 1], got {value!r}")
    return x


def at_least(value, low: float, flag: str) -> float:
    """>= low: PUE (a data centre uses at least the power its devices draw, so >= 1)."""
    x = _finite(value, flag, f"a number >= {low}")
    if x < low:
        raise CostError(f"{flag} must be at least {low}, got {value!r}")
    return x
