"""The binary-looking document guard of prepare: a document whose share of control
characters (other than tab, newline, carriage return, form feed) or of U+FFFD replacement
characters is above its threshold is an undecoded body or a binary file, whatever reader
produced it (data.binary_guard)."""
from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def binary_reason(text: str, max_control_frac: float, max_replacement_frac: float) -> tuple[str | None, str]:
    n = len(text) or 1
    ctrl = len(CONTROL.findall(text)) / n
    if ctrl > max_control_frac:
        return "binary_control_chars", f"{ctrl:.3f} control characters > {max_control_frac} (data.binary_guard)"
    repl = text.count("\ufffd") / n
    if repl > max_replacement_frac:
        return "binary_replacement_chars", f"{repl:.3f} U+FFFD > {max_replacement_frac} (data.binary_guard)"
    return None, ""
