from __future__ import annotations

import pytest

from argbridge.delivery.ratelimit import Buckets, TokenBucket


def test_burst_then_one_per_second():
    b = TokenBucket(rate=1.0, burst=3)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(1.0)
    assert b.take(0.5) == pytest.approx(0.5)
    assert b.take(1.0) == 0.0
    assert b.take(1.0) == pytest.approx(1.0)
    assert b.take(100.0) == 0.0  # refills, but never above the burst
    assert b.tokens == pytest.approx(2.0)


def test_retry_after_blocks_and_empties():
    b = TokenBucket(rate=1.0, burst=3)
    b.block(10.0, 30.0)
    assert b.take(10.0) == pytest.approx(30.0)
    assert b.take(39.0) == pytest.approx(1.0)
    assert b.take(40.0) == 0.0
    assert b.take(40.0) == pytest.approx(1.0)  # no burst saved up while blocked
    assert b.take(41.0) == 0.0


def test_buckets_are_per_key_and_validated():
    buckets = Buckets(rate=2.0, burst=1)
    assert buckets.get("a") is buckets.get("a")
    assert buckets.get("a").take(0.0) == 0.0
    assert buckets.get("b").take(0.0) == 0.0
    assert buckets.get("a").take(0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
