"""The shared wall-time schedule: warmup in steps, cosine in wall time to a deadline or the trainer's max_time."""

import pytest

from linmix.shared.lightning import TimeBudget


def test_schedule_follows_the_clock_to_the_deadline():
    cb = TimeBudget(deadline=1100.0, reserve_s=100.0)
    cb.t0 = 0.0  # the schedule spans 0 .. 1000 s
    assert cb.fraction(now=500.0) == pytest.approx(0.5)
    assert cb.lr_multiplier(0, 10, 0.1, now=0.0) == pytest.approx(0.1)  # warmup: (0 + 1) / 10
    assert cb.lr_multiplier(9, 10, 0.1, now=0.0) == pytest.approx(1.0)
    assert cb.lr_multiplier(10, 10, 0.1, now=0.0) == pytest.approx(1.0)
    assert cb.lr_multiplier(500, 10, 0.1, now=500.0) == pytest.approx(0.55)
    assert cb.lr_multiplier(500, 10, 0.1, now=1000.0) == pytest.approx(0.1)
    assert cb.lr_multiplier(500, 10, 0.1, now=5000.0) == pytest.approx(0.1)  # past the end: the floor
    assert cb.lr_multiplier(5, 10, 0.0, now=500.0) == pytest.approx(0.6 * 0.5)  # warmup x cosine


def test_without_a_budget_the_step_schedule_stays_and_bad_arguments_are_named():
    assert TimeBudget().lr_multiplier(5, 10, 0.1) is None
    with pytest.raises(ValueError, match="stop_at"):
        TimeBudget(stop_at="never")
    with pytest.raises(ValueError, match="deadline"):
        TimeBudget(deadline=0.0)
