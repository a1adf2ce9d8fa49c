"""How many steps a run takes: its budget turned into a step count (the horizon).

`max_steps` and `max_tokens` give a step count directly. A time budget is turned into one
from the throughput measured early in the run: the first step (two with torch.compile)
is skipped, as it compiles and warms caches; then, once at least two more steps and
min(5% of the budget, 30 s) have been measured, the remaining time divided by the
measured seconds per step gives the planned steps. The measurement is stored in the
checkpoint, so a resumed run follows the same plan as an uninterrupted one, and a raised
time budget is re-planned from the same measurement (not from the speed of the machine
the run resumes on). The learning-rate schedule follows step / horizon; the run stops
at whichever budget comes first. No torch here.
"""
from __future__ import annotations

import math

from fmforge.config import TrainConfig


class Plan:
    def __init__(self, cfg: TrainConfig, tokens_per_step: int, start_step: int, compiled: bool,
                 measured: dict | None = None):
        self.cfg, self.tokens_per_step = cfg, tokens_per_step
        self.measured = measured  # {"sec_per_step", "at_step", "at_elapsed"} once made
        self.skip_until = start_step + (2 if compiled else 1)
        self.skip_elapsed: float | None = None

    def time_steps(self) -> int | None:
        if not (self.cfg.time_budget_s and self.measured):
            return None
        m = self.measured
        left = (self.cfg.time_budget_s - m["at_elapsed"]) / m["sec_per_step"]
        return m["at_step"] + max(0, math.floor(left + 1e-9))

    def horizon(self) -> int | None:
        """Planned total steps; None while a run with only a time budget is still measuring."""
        parts = []
        if self.cfg.max_steps:
            parts.append(self.cfg.max_steps)
        if self.cfg.max_tokens:
            parts.append(math.ceil(self.cfg.max_tokens / self.tokens_per_step))
        t = self.time_steps()
        if t is not None:
            parts.append(t)
        # While a timed run measures, the step/token budget (if any) stands in: the time
        # plan can only shorten it, and a deterministic stand-in keeps resumes exact.
        return min(parts) if parts else None

    def observe(self, step: int, elapsed: float) -> None:
        """Called after each step: makes the time plan when the measurement window is full."""
        if not self.cfg.time_budget_s or self.measured is not None:
            return
        if step == self.skip_until:
            self.skip_elapsed = elapsed
        if self.skip_elapsed is None or step < self.skip_until + 2:
            return
        window = elapsed - self.skip_elapsed
        if window >= min(0.05 * self.cfg.time_budget_s, 30.0) or elapsed >= self.cfg.time_budget_s:
            self.measured = {"sec_per_step": window / (step - self.skip_until), "at_step": step,
                             "at_elapsed": elapsed}

    def done(self, step: int, tokens: int, elapsed: float) -> bool:
        c = self.cfg
        if c.max_steps and step >= c.max_steps:
            return True
        if c.max_tokens and tokens >= c.max_tokens:
            return True
        if c.time_budget_s:
            t = self.time_steps()
            return step >= t if t is not None else elapsed >= c.time_budget_s
        return False

    def progress(self, step: int, tokens: int, elapsed: float) -> float:
        """Share of the run done, for the progress line and its ETA."""
        h = self.horizon()
        if h:
            return min(1.0, step / h)
        return min(1.0, elapsed / self.cfg.time_budget_s) if self.cfg.time_budget_s else 0.0
