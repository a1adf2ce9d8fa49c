"""The time plan (fmforge.train.plan): a run with a time budget ends inside it when the
machine slows down after the first measurement, and the budget is a hard limit.

Each case drives Plan with a made-up clock, as the trainer does after every step; the
expected step counts and times are worked out by hand in the comments."""
import pytest

from fmforge.config import TrainConfig
from fmforge.train.plan import Plan


def run(cfg: TrainConfig, lap) -> tuple[Plan, int, float]:
    """Steps until the plan says done; lap(step) is that step's seconds. (plan, steps, elapsed)"""
    plan, step, elapsed = Plan(cfg, 1, 0, compiled=False), 0, 0.0
    while not plan.done(step, step, elapsed):
        step += 1
        elapsed += lap(step)
        plan.observe(step, elapsed)
    return plan, step, elapsed


def slows_down(step: int) -> float:
    # step 1 compiles (1 s, skipped); 0.05 s steps, then 0.08 s from step 31 on
    return 1.0 if step == 1 else 0.05 if step <= 30 else 0.08


def test_a_run_that_slows_down_is_replanned_and_ends_inside_its_budget():
    cfg = TrainConfig(time_budget_s=10.0, schedule="wsd", decay_fraction=0.4, max_steps=None)
    # The first plan, at step 11 (10 measured steps = 0.5 s = 5% of the budget), is 11 + 8.5/0.05
    # = 181 steps; kept, those would take 1 + 29·0.05 + 151·0.08 = 14.53 s. Re-planned from the
    # recent steps, at 0.08 s a step the plan is fixed where the decay starts (60% of it) and the run
    # ends by its plan, before the hard limit: at n steps, 1 + 1.45 + (n - 30)·0.08 <= 10, n <= 124.
    plan, steps, elapsed = run(cfg, slows_down)
    assert plan.measured["fixed"] and plan.measured["sec_per_step"] == pytest.approx(0.08)
    assert steps == plan.horizon() == 124
    assert elapsed == pytest.approx(1 + 29 * 0.05 + 94 * 0.08) and elapsed <= 10.0


def test_the_budget_is_a_hard_limit_when_the_machine_slows_after_the_plan_is_fixed():
    cfg = TrainConfig(time_budget_s=10.0, schedule="wsd", decay_fraction=0.4, max_steps=None)
    # 0.05 s steps: 1 + (n - 1)·0.05 = 10 at n = 181, fixed at 60% of it; from step 150 each step
    # takes 0.5 s: 1 + 148·0.05 = 8.4 s at step 149, then 8.9, 9.4, 9.9 (+0.05 planned: still
    # inside), 10.4 at step 153: it stops there
    plan, steps, elapsed = run(cfg, lambda s: 1.0 if s == 1 else 0.05 if s < 150 else 0.5)
    assert plan.horizon() == 181 and plan.measured["fixed"]
    assert steps == 153 and elapsed == pytest.approx(10.4)


def test_no_step_is_started_that_would_end_past_the_budget():
    cfg = TrainConfig(time_budget_s=10.0, schedule="wsd", decay_fraction=0.4, max_steps=None)
    # fixed at 0.05 s a step (181 planned); from step 150 steps take 0.06 s: 8.4 s at step 149, then
    # 8.4 + 0.06·j. Step 175 ends at 9.96 s; one more would end at 9.96 + 0.05 > 10 by the plan's
    # step time, so none is started (stopping only at or past 10 s, it would end at 10.02 s)
    plan, steps, elapsed = run(cfg, lambda s: 1.0 if s == 1 else 0.05 if s < 150 else 0.06)
    assert plan.horizon() == 181 and steps == 175 and elapsed == pytest.approx(9.96)


@pytest.mark.parametrize("schedule, fixed_from", [("cosine", 0.5), ("constant", 0.5), ("wsd", 0.8)])
def test_the_plan_is_fixed_before_the_rate_it_sets_starts_to_fall(schedule, fixed_from):
    cfg = TrainConfig(time_budget_s=10.0, schedule=schedule, decay_fraction=0.2, max_steps=None)
    plan, step, elapsed = Plan(cfg, 1, 0, compiled=False), 0, 0.0
    while plan.measured is None or not plan.measured["fixed"]:
        step += 1
        elapsed += 1.0 if step == 1 else 0.05
        plan.observe(step, elapsed)
    # a steady 0.05 s a step plans 181 steps (1 + 180·0.05 = 10 s); fixed at the step before the decay
    assert plan.horizon() == 181 and step + 1 == int(-(-fixed_from * 181 // 1))


def test_a_resumed_plan_stays_as_it_was_saved():
    cfg = TrainConfig(time_budget_s=10.0, max_steps=None)
    saved = {"sec_per_step": 0.05, "at_step": 11, "at_elapsed": 1.5, "fixed": False}
    plan = Plan(cfg, 1, 40, compiled=False, measured=saved)
    for step in range(41, 60):
        plan.observe(step, 1.5 + 0.05 * 29 + (step - 40) * 0.5)  # much slower: no effect
    assert plan.horizon() == 11 + 170 and plan.measured["fixed"]
    old = {"sec_per_step": 0.05, "at_step": 11, "at_elapsed": 1.5}  # a checkpoint from before "fixed"
    assert Plan(cfg, 1, 40, compiled=False, measured=old).horizon() == 181
