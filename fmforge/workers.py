"""Worker processes for the data and tokenizer stages.

Workers come from a fork server where the platform has one: a clean process, started
once, that has already imported the stages' modules and loaded the language-id model;
each worker is a fork of it, so it starts in milliseconds with that memory shared.
Plain `spawn` (a fresh interpreter per worker) cost 1.3 s of the parent's time for 16
workers on a 2-core machine and about 0.4 CPU-s of imports and model loading in each
worker (docs/LOG.md, 2026-12-02). Never `fork` of the caller: it may hold threads
(torch, Ray) that a fork would corrupt.
"""
from __future__ import annotations

import multiprocessing as mp

# what the fork server imports before forking workers (fmforge.data.preload also loads
# the language-id model); a module that fails to import is skipped by multiprocessing
PRELOAD = ["fmforge.data.preload", "fmforge.tokenizer.encode"]


def context():
    """The multiprocessing context for fmforge's worker pools."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)  # takes effect when the server starts (first pool)
        return ctx
    return mp.get_context("spawn")
