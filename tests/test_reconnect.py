"""The reconnect policy: every outcome class, backoff growth, floors, resets."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from argbridge.reconnect import Action, ReconnectPolicy, content_type_essence, parse_retry_after


def policy(**kw) -> ReconnectPolicy:
    kw.setdefault("rng", random.Random(1))
    return ReconnectPolicy(initial=1.0, cap=8.0, factor=2.0, **kw)


def test_network_errors_back_off_exponentially_with_full_jitter_and_cap():
    p = policy(jitter=False)
    delays = [p.on_network_error().delay for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    j = policy()
    jittered = [j.on_network_error().delay for _ in range(50)]
    assert all(0.0 <= d <= 8.0 for d in jittered)
    assert len(set(jittered)) > 10


def test_progress_resets_the_backoff_but_a_short_session_does_not():
    p = policy(jitter=False)
    p.on_network_error()
    p.on_network_error()
    assert p.on_eof(terminal=False).delay == 4.0  # no progress: keeps growing
    p.progressed()
    assert p.on_eof(terminal=False).delay == 1.0


def test_eof_of_terminal_run_is_done():
    assert policy().on_eof(terminal=True).action is Action.DONE


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 408])
def test_retryable_statuses_honour_retry_after(status):
    d = policy().on_response(status, "text/plain", "7")
    assert d is not None and d.action is Action.RECONNECT and d.delay >= 7.0
    assert d.reason == f"http_{status}"


def test_retry_after_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert parse_retry_after("garbage", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("12", now) == 12.0


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_stops_and_alerts(status):
    d = policy().on_response(status, "application/json")
    assert d is not None and d.action is Action.STOP and d.alert and d.reason == "auth_failed"


def test_not_found_stops_without_alert():
    d = policy().on_response(404, "application/json")
    assert d is not None and d.action is Action.STOP and not d.alert and d.reason == "not_found"


@pytest.mark.parametrize(
    ("status", "ctype", "reason"),
    [
        (200, "text/html", "bad_content_type"),
        (200, None, "bad_content_type"),
        (204, None, "http_204"),
        (400, "application/json", "http_400"),
        (302, None, "http_302"),
    ],
)
def test_no_retry_loop_on_wrong_type_or_other_status(status, ctype, reason):
    d = policy().on_response(status, ctype)
    assert d is not None and d.action is Action.STOP and d.reason == reason


def test_good_response():
    assert policy().on_response(200, "text/event-stream; charset=utf-8") is None
    assert content_type_essence("Text/Event-Stream ; x") == "text/event-stream"


def test_server_retry_is_a_floor():
    p = policy(jitter=False)
    p.set_server_retry(5000)
    assert p.on_network_error().delay == 5.0
    p.set_server_retry(None)  # absent retry keeps the last one
    assert p.server_retry == 5.0


@pytest.mark.parametrize("code", [1008, 4401, 4403])
def test_ws_policy_violation_stops_with_alert(code):
    d = policy().on_ws_close(code)
    assert d.action is Action.STOP and d.alert


def test_ws_1008_saying_not_found_is_a_missing_stream_not_a_refusal():
    d = policy().on_ws_close(1008, reason="Test run not found")
    assert d.action is Action.STOP and not d.alert
    assert (d.reason, d.detail) == ("not_found", "close 1008 Test run not found")
    refused = policy().on_ws_close(1008, reason="unauthorized")
    assert refused.alert and refused.detail == "close 1008 unauthorized"


def test_ws_other_closes_reconnect_and_done_ends():
    p = policy()
    assert p.on_ws_close(1011).action is Action.RECONNECT
    assert p.on_ws_close(None).reason == "ws_abnormal_close"
    assert p.on_ws_close(1000).reason == "ws_closed"
    assert p.on_ws_close(1000, done=True).action is Action.DONE
    assert p.on_ws_close(4404).reason == "not_found"


def test_ws_handshake_status():
    p = policy()
    assert p.on_ws_handshake_status(403, None, 0).alert
    assert p.on_ws_handshake_status(503, "2", 0).delay >= 2
    assert p.on_ws_handshake_status(200, None, 0).action is Action.STOP
