"""The one line between a user's mistake and a bug.

A ``UserError`` is bad input the user can fix (a missing file, a wrong field, a folder
that is not ours to write): the CLI prints its message as one line and exits 2. Every
other exception is a bug and keeps its traceback. Each stage raises a subclass of its
own (RecipeError, DataError, CostError, ...) so a test can tell them apart.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user; the message names the file, line or field and the fix."""


class InputNotFound(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class DegenerateResult(UserError):
    """A stage ran but its result is unusable (nothing kept, nothing learned)."""


class RunLocked(UserError):
    """Another live process is writing the same run or output folder."""
