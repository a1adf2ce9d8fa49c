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



def context(preload: list[str]):
    """The multiprocessing context for a worker pool whose workers run code of the
    modules `preload` (imported by the fork server before it forks them; e.g.
    fmforge.data.preload, which also loads the language-id model). The server starts with
    the first pool of the process and keeps its preload: a later pool's workers import
    what else they need themselves, which is only slower."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(preload)
        return ctx
    return mp.get_context("spawn")
