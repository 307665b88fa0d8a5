"""Sink configuration errors name the key and say what to do."""

from __future__ import annotations

from typing import Any

import pytest

from argbridge.config import load_settings
from argbridge.errors import ConfigError


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ({"type": "kafka", "acks": "2"}, "sinks.x.acks: must be one of 0, 1, all"),
        ({"type": "kafka", "topic": "a.{type!r}"}, "sinks.x.topic: topic template"),
        ({"type": "kafka", "call_timeout": 1}, "call_timeout must be larger than request_timeout"),
        ({"type": "kafka", "enable_idempotence": True, "acks": 1}, 'needs acks = "all"'),
        ({"type": "kafka", "acks": 1}, "or set enable_idempotence = false"),
        ({"type": "slack"}, "sinks.x: set exactly one of webhook_url or bot_token"),
        ({"type": "slack", "bot_token": "xoxb-1"}, "bot_token needs a channel"),
        ({"type": "webhook", "url": "ftp://h", "secrets": ["s"]}, "sinks.x.url: not an http(s)"),
        ({"type": "webhook", "url": "https://h", "secrets": []}, "sinks.x.secrets"),
    ],
)
def test_errors(sink: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, sinks={"x": sink}, http={"enabled": False})
    assert message in str(info.value)


def test_defaults() -> None:
    s = load_settings(
        None,
        http={"enabled": False},
        sinks={
            "k": {"type": "kafka", "acks": -1, "compression": "zstd"},
            "w": {"type": "webhook", "url": "https://h", "secrets": ["whsec_abc"]},
        },
    )
    k, w = s.sinks["k"], s.sinks["w"]
    assert k.acks == "all" and k.enable_idempotence is True and k.mode == "binary"  # type: ignore[union-attr]
    assert w.retry_schedule == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]  # type: ignore[union-attr]
    assert w.timeout == 15.0 and w.allow_private is False  # type: ignore[union-attr]
    assert "whsec_abc" not in repr(w)


@pytest.mark.parametrize(
    ("sink", "batch_size"),
    [
        ({"type": "kafka"}, 500),
        ({"type": "kafka", "delivery": "exactly-once"}, 2000),
        ({"type": "kafka", "delivery": "exactly-once", "batch_size": 300}, 300),
        ({"type": "kafka", "delivery": "at-least-once", "batch_size": 3000}, 3000),
    ],
)
def test_exactly_once_batch_default(sink: dict[str, Any], batch_size: int) -> None:
    # An exactly-once transaction pays fixed round trips: its default batch is larger;
    # an explicit batch_size always wins.
    s = load_settings(None, sinks={"k": sink}, http={"enabled": False})
    assert s.sinks["k"].batch_size == batch_size


def test_exactly_once_batch_default_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARGBRIDGE_SINKS__K__BATCH_SIZE", "700")
    s = load_settings(
        None, sinks={"k": {"type": "kafka", "delivery": "exactly-once"}}, http={"enabled": False}
    )
    assert s.sinks["k"].batch_size == 700
