"""Imported by the worker fork server (fmforge.workers): the modules prepare's workers
run, and the language-id model they all use, loaded once and shared by every worker."""
from fmforge.data import stages, tasks, write  # noqa: F401
from fmforge.data.langid import _py3langid

_py3langid()
