"""Full-jitter exponential backoff."""

from __future__ import annotations

import random

from argbridge.backoff import Backoff


def test_delays_grow_exponentially_up_to_the_cap_without_jitter():
    b = Backoff(base=0.5, cap=4, factor=2, jitter=False)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    b.reset()
    assert b.next_delay() == 0.5


def test_full_jitter_stays_within_zero_and_the_ceiling():
    b = Backoff(base=1, cap=10, rng=random.Random(7))
    for attempt in range(50):
        ceiling = min(10, 2**attempt)
        assert 0 <= b.next_delay() <= ceiling


def test_a_server_imposed_minimum_wins():
    b = Backoff(base=0.1, cap=1, rng=random.Random(1))
    assert b.next_delay(at_least=30) == 30


def test_a_long_outage_never_overflows():
    b = Backoff(base=0.5, cap=30, jitter=False)
    b.attempt = 5000  # ~40 h of 30 s retries
    assert b.next_delay() == 30
