from __future__ import annotations

import random

import pytest

from argbridge.delivery.schedule import DEFAULT_SCHEDULE, RetrySchedule


def test_default_schedule_without_jitter():
    s = RetrySchedule(jitter=0.0)
    assert s.max_attempts == 8
    delays = [s.next_delay(k) for k in range(1, 8)]
    assert delays == list(DEFAULT_SCHEDULE[1:])
    assert s.next_delay(8) is None


def test_jitter_stays_within_bounds_and_retry_after_is_a_floor():
    s = RetrySchedule((0, 100.0), jitter=0.2, rng=random.Random(1))
    values = [s.next_delay(1) for _ in range(200)]
    assert all(v is not None and 80.0 <= v <= 120.0 for v in values)
    assert len(set(values)) > 100
    assert s.next_delay(1, retry_after=500.0) == 500.0
    assert s.next_delay(0) == 0.0


def test_invalid():
    with pytest.raises(ValueError):
        RetrySchedule(())
    with pytest.raises(ValueError):
        RetrySchedule(jitter=1.5)
