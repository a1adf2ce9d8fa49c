"""How many steps a run takes: its budget turned into a step count (the horizon).

`max_steps` and `max_tokens` give a step count directly. A time budget is turned into one
from the throughput measured in the run: the first step (two with torch.compile) is
skipped, as it compiles and warms caches; then, once at least two more steps and
min(5% of the budget, 30 s) have been measured, the remaining time divided by the
measured seconds per step gives the planned steps. The plan is then remade after every
step from the more recent half of the steps measured so far (the recent speed predicts
the coming steps best), until the learning rate starts to decay (the decay phase of
`wsd`; half the planned steps for the other schedules), and fixed from there. Made once
from the first seconds, it overran a 58.5 s budget by 2.1 s (3.6%) on a machine whose
steps then got slower (time_to_quality-2026-12-07-3, docs/LOG.md). The budget is also a hard limit: no step is
started that the measured step time says would end past it, and a run whose steps got
slower after the plan was fixed stops at the first one that ends past it, cutting short
its decay.

The plan is stored in the checkpoint, so a resumed run follows the plan it was saved with
(fixed from then on: the resumed process's first steps compile again and would skew a
measurement), and a raised time budget is re-planned from the same measurement (not from
the speed of the machine the run resumes on). The learning-rate schedule follows
step / horizon; the run stops at whichever budget comes first. No torch here.
"""
from __future__ import annotations

import math

from fmforge.config import TrainConfig


class Plan:
    def __init__(self, cfg: TrainConfig, tokens_per_step: int, start_step: int, compiled: bool,
                 measured: dict | None = None):
        self.cfg, self.tokens_per_step = cfg, tokens_per_step
        # {"sec_per_step", "at_step", "at_elapsed", "fixed"} once made; a resumed plan is fixed
        self.measured = None if measured is None else {**measured, "fixed": True}
        self.skip_until = start_step + (2 if compiled else 1)
        self.skip_elapsed: float | None = None
        self.lap_ends: list[float] = []  # elapsed at the end of each step since the skipped ones

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

    def describe(self) -> str:
        """The log line for a plan just made or fixed. It names what ends the run: the time budget
        (its planned steps) or, when it allows more, the step or token budget that comes first."""
        m, c = self.measured, self.cfg
        text = (f"time budget {c.time_budget_s:g} s at {m['sec_per_step']:.3g} s/step (measured over "
                f"{m['at_step'] - self.skip_until} steps): ")
        fit, h = self.time_steps(), self.horizon()
        if h < fit:
            which = "max_steps" if c.max_steps == h else "max_tokens"
            text += f"{fit} steps fit; train.{which} ends the run at {h}"
        else:
            text += f"{h} steps planned"
        return text + (", fixed" if m["fixed"] else "")

    def observe(self, step: int, elapsed: float) -> bool:
        """Called after each step: makes the time plan when the measurement window is full,
        then remakes it from the recent half of the steps until it is fixed. True when the plan was
        made or fixed at this step (worth a line in the log)."""
        if not self.cfg.time_budget_s or (self.measured is not None and self.measured["fixed"]):
            return False
        if step == self.skip_until:
            self.skip_elapsed = elapsed
        if self.skip_elapsed is None:
            return False
        self.lap_ends.append(elapsed)  # lap_ends[i]: elapsed at step skip_until + i
        if step < self.skip_until + 2:
            return False
        first = self.measured is None
        if first and elapsed - self.skip_elapsed < min(0.05 * self.cfg.time_budget_s, 30.0) \
                and elapsed < self.cfg.time_budget_s:
            return False
        since = 0 if first else (step - self.skip_until) // 2  # later plans: the recent half
        sec = (elapsed - self.lap_ends[since]) / (step - self.skip_until - since)
        self.measured = {"sec_per_step": sec, "at_step": step, "at_elapsed": elapsed, "fixed": False}
        h = self.horizon()  # the schedule's: a step or token budget may be the shorter
        decay_from = (1.0 - self.cfg.decay_fraction) * h if self.cfg.schedule == "wsd" else 0.5 * h
        self.measured["fixed"] = step + 1 >= decay_from  # the next step's rate depends on the horizon
        return first or self.measured["fixed"]

    def done(self, step: int, tokens: int, elapsed: float) -> bool:
        c = self.cfg
        if c.max_steps and step >= c.max_steps:
            return True
        if c.max_tokens and tokens >= c.max_tokens:
            return True
        if c.time_budget_s:
            if self.measured is None:
                return elapsed >= c.time_budget_s
            # the plan, and the hard limit: no step that the measured step time would end past
            # the budget is started (1e-9: a clock summed in floats may land a hair past it)
            next_end = elapsed + self.measured["sec_per_step"]
            return step >= self.time_steps() or next_end > c.time_budget_s * (1 + 1e-9)
        return False

    def progress(self, step: int, tokens: int, elapsed: float) -> float:
        """Share of the run done, for the progress line and its ETA."""
        h = self.horizon()
        if h:
            return min(1.0, step / h)
        return min(1.0, elapsed / self.cfg.time_budget_s) if self.cfg.time_budget_s else 0.0
