"""Retry-topic naming, tiers and headers, on literals."""

from __future__ import annotations

import pytest

from argbridge.cluster.codec import RecordError
from argbridge.cluster.retry_topics import (
    MAX_TIERS,
    RetryInfo,
    RetryTopics,
    parse_retry,
    retry_headers,
)


def test_one_tier_per_retry_and_the_last_one_reused():
    t = RetryTopics.of("prod", "slack", 4)
    assert t.tiers == 3
    assert t.topics() == [
        "prod.delivery.slack.retry.1",
        "prod.delivery.slack.retry.2",
        "prod.delivery.slack.retry.3",
    ]
    assert t.topic_for(1) == "prod.delivery.slack.retry.1"
    assert t.topic_for(3) == "prod.delivery.slack.retry.3"
    assert t.topic_for(9) == "prod.delivery.slack.retry.3"
    assert t.topic_for(0) == "prod.delivery.slack.retry.1"
    assert t.is_retry("prod.delivery.slack.retry.2")
    assert not t.is_retry("prod.events")


def test_tier_bounds_and_names():
    assert RetryTopics.of("d", "s", 1).tiers == 1
    assert RetryTopics.of("d", "s", 100).tiers == MAX_TIERS
    assert RetryTopics.of("d", "my sink/β", 2).base == "d.delivery.my_sink_.retry"


def test_headers_round_trip_and_replace_older_ones():
    base = [("ce_id", b"e1"), ("content-type", b"application/json")]
    first = retry_headers(base, 1, 1700000005.25, "HTTP 503")
    assert parse_retry(first) == RetryInfo(1, 1700000005.25, "HTTP 503")
    second = retry_headers(first, 2, 1700000305.0, "timeout")
    assert parse_retry(second) == RetryInfo(2, 1700000305.0, "timeout")
    assert second[:2] == base
    assert len(second) == len(base) + 3


def test_a_long_error_is_cut_on_a_character_boundary():
    h = retry_headers([], 1, 1.0, "é" * 400)
    info = parse_retry(h)
    assert len(info.error.encode()) <= 500
    assert set(info.error) == {"é"}


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("argbridge-retry-due", b"1.0")],
        [("argbridge-retry-due", b"soon"), ("argbridge-retry-attempt", b"1")],
        [("argbridge-retry-due", b"1.0"), ("argbridge-retry-attempt", b"0")],
        [("argbridge-retry-due", b"nan"), ("argbridge-retry-attempt", b"1")],
    ],
)
def test_malformed_retry_headers_are_named(headers):
    with pytest.raises(RecordError, match="retry"):
        parse_retry(headers)
