"""Stopping a run on SIGINT/SIGTERM without losing it.

While the trainer runs, the first SIGINT or SIGTERM only sets a flag; the loop finishes
its step, saves a checkpoint and raises ``TrainingInterrupted`` (the CLI exits with
128 + the signal: 130 for Ctrl-C, 143 for SIGTERM). A second signal acts as usual
(KeyboardInterrupt / termination), for a user who does not want to wait. No torch here.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class TrainingInterrupted(Exception):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, signum: int, checkpoint: Path | None):
        self.signum, self.checkpoint = signum, checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        # `fmforge run` resumes an interrupted stage by itself; `fmforge train` / `finetune` need the flag
        where = (f"checkpoint saved at {checkpoint}; to continue, run the same command again (fmforge train / "
                 "fmforge finetune: with --resume)") if checkpoint else "no checkpoint"
        super().__init__(f"training stopped by {name}: {where}")


class StopRequest:
    """The signal received so far (0: none)."""

    def __init__(self):
        self.signum = 0


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    req = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # handlers only work there
        yield req
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in sigs}

    def handler(signum, frame):
        req.signum = signum
        for s in sigs:  # the next one is not caught
            signal.signal(s, previous[s])

    for s in sigs:
        signal.signal(s, handler)
    try:
        yield req
    finally:
        for s in sigs:
            signal.signal(s, previous[s])
