from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from argbridge.delivery.webhook_out import (
    OutboundRequest,
    Outcome,
    Signer,
    build_request,
    classify,
    message_id,
    parse_retry_after,
    transport_failure,
)
from tests.conftest import make_event

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
NOW = 1_700_000_000.0


def _verify(secret: str, request: OutboundRequest) -> Any:
    hook = Webhook(secret)
    # standardwebhooks checks the timestamp against the real clock; sign "now".
    return hook.verify(request.body, request.headers)


def test_signed_with_every_secret_and_verified_by_standardwebhooks():
    ev = make_event(1)
    now = datetime.now(UTC).timestamp()
    request = build_request(ev, Signer([OLD, NEW]), now)
    assert request.headers["webhook-id"] == ev.id
    assert request.headers["webhook-timestamp"] == str(int(now))
    sigs = request.headers["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs)
    assert _verify(OLD, request)["id"] == ev.id
    assert _verify(NEW, request)["id"] == ev.id
    with pytest.raises(WebhookVerificationError):
        _verify("whsec_" + base64.b64encode(b"x" * 32).decode(), request)
    assert request.body == ev.to_json()  # exactly the bytes sent are signed


def test_raw_secret_is_used_as_key_bytes():
    now = datetime.now(UTC).timestamp()
    request = build_request(make_event(2), Signer(["plain-text-secret"]), now)
    assert Webhook(b"plain-text-secret").verify(request.body, request.headers)
    assert "plain" not in repr(Signer(["plain-text-secret"]))


def test_message_id_never_contains_a_dot():
    assert message_id(make_event(1, id="a.b")) != "a.b"
    assert "." not in message_id(make_event(1, id="a.b"))
    assert message_id(make_event(1, id="a.b")) == message_id(make_event(1, id="a.b"))


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "after", "endpoint_failure"),
    [
        (200, {}, Outcome.DELIVERED, None, False),
        (204, {"webhook-delivery": "abort-message"}, Outcome.DELIVERED, None, False),
        (410, {}, Outcome.DISABLE, None, False),
        (429, {"retry-after": "7"}, Outcome.RETRY, 7.0, False),
        (502, {"retry-after": "30"}, Outcome.RETRY, 30.0, True),
        (504, {}, Outcome.RETRY, None, True),
        (500, {}, Outcome.RETRY, None, True),
        (400, {}, Outcome.RETRY, None, False),
        (301, {}, Outcome.RETRY, None, False),
        (500, {"webhook-delivery": "abort-message"}, Outcome.ABORT, None, False),
        (429, {"retry-after": "999999999"}, Outcome.RETRY, 86400.0, False),
    ],
)
def test_classify(status, headers, outcome, after, endpoint_failure):
    verdict = classify(status, headers, NOW)
    assert verdict.outcome is outcome
    assert verdict.retry_after == after
    assert verdict.endpoint_failure is endpoint_failure


def test_retry_after_forms():
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("garbage", NOW) is None
    assert parse_retry_after(" 12 ", NOW) == 12.0
    date = datetime.fromtimestamp(NOW + 90, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(date, NOW) == pytest.approx(90.0)
    past = datetime.fromtimestamp(NOW - 90, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(past, NOW) == 0.0


def test_transport_failure_counts_against_the_endpoint():
    v = transport_failure(TimeoutError("read timed out"))
    assert v.outcome is Outcome.RETRY and v.endpoint_failure
