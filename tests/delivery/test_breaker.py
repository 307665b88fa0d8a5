from __future__ import annotations

from argbridge.delivery.breaker import BreakerState, CircuitBreaker


def test_opens_after_threshold_and_probes_half_open():
    b = CircuitBreaker(threshold=3, cooldown=10.0)
    for _ in range(2):
        assert b.allow(0.0)
        b.failure(0.0)
    assert b.state(0.0) is BreakerState.CLOSED
    b.failure(1.0)
    assert b.state(1.0) is BreakerState.OPEN
    assert not b.allow(5.0)
    assert b.retry_at(5.0) == 11.0
    assert b.state(11.0) is BreakerState.HALF_OPEN
    assert b.allow(11.0)  # the probe
    assert not b.allow(11.0)  # only one probe at a time
    b.failure(11.5)  # probe failed: open again, longer
    assert b.state(12.0) is BreakerState.OPEN
    assert b.retry_at(12.0) == 31.5
    assert b.allow(31.5)
    b.success()
    assert b.state(31.5) is BreakerState.CLOSED
    assert b.allow(31.5) and b.allow(31.5)


def test_success_resets_the_count():
    b = CircuitBreaker(threshold=2, cooldown=1.0)
    b.failure(0.0)
    b.success()
    b.failure(0.0)
    assert b.state(0.0) is BreakerState.CLOSED


def test_cooldown_growth_is_capped():
    b = CircuitBreaker(threshold=1, cooldown=100.0, max_cooldown=150.0)
    b.failure(0.0)
    now = 0.0
    for _ in range(4):
        now = b.retry_at(now)
        assert b.allow(now)
        b.failure(now)
    assert b.retry_at(now) - now == 150.0
