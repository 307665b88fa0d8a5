"""Outbound Standard Webhooks: signing a CloudEvent, and what a response means.

Pure: no I/O. Owns:

- :func:`build_request`: the structured CloudEvent JSON (exactly the bytes sent) with
  ``webhook-id`` (the event id), ``webhook-timestamp`` (integer Unix seconds) and
  ``webhook-signature`` — one ``v1,<base64 HMAC-SHA256>`` per secret, space-separated, so
  receivers accept the message during a secret rotation. Signing uses the
  ``standardwebhooks`` package over ``{id}.{timestamp}.{body}``.
- :func:`classify`: an HTTP outcome → :class:`Verdict` (delivered, retry — honouring
  ``Retry-After`` on 429/502/503/504 —, disable the endpoint on 410, or stop retrying when the
  receiver answers ``webhook-delivery: abort-message``).
- :func:`parse_retry_after`: delta-seconds or an HTTP date.
"""

from __future__ import annotations

import email.utils
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from argbridge.events import CloudEvent, deterministic_id
from argbridge.logging import redact_text
from argbridge.tracecontext import trace_headers

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
#: Retry-After is honoured up to this bound (a receiver cannot park us for a week).
MAX_RETRY_AFTER = 24 * 3600.0
THROTTLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """What to POST: exact body bytes and headers (signatures included)."""

    msg_id: str
    timestamp: int
    body: bytes
    headers: dict[str, str]


class Signer:
    """Signs with every configured secret (``whsec_…`` base64 or raw text)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one signing secret is needed")
        self._hooks = [_webhook(s) for s in secrets]

    def __repr__(self) -> str:
        return f"Signer(<{len(self._hooks)} secret(s)>)"

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        when = datetime.fromtimestamp(timestamp, UTC)
        text = body.decode("utf-8")
        return " ".join(str(h.sign(msg_id, when, text)) for h in self._hooks)


def _webhook(secret: str) -> Webhook:
    if secret.startswith("whsec_"):
        return Webhook(secret)
    # A secret without the whsec_ prefix is used as raw key bytes.
    return Webhook(secret.encode())


def message_id(event: CloudEvent) -> str:
    """``webhook-id``: the event id (a stable idempotency key across retries).

    The spec forbids ``.`` in the id (it separates the signed parts); such ids are
    mapped to a deterministic UUID instead.
    """
    if "." in event.id or not event.id.isprintable():
        return deterministic_id("webhook-id", event.source, event.id)
    return event.id


def build_request(
    event: CloudEvent, signer: Signer, now: float, extra_headers: Mapping[str, str] | None = None
) -> OutboundRequest:
    body = event.to_json()
    msg_id = message_id(event)
    ts = int(now)
    headers = {
        "content-type": CONTENT_TYPE,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signer.signature(msg_id, ts, body),
    }
    if event.extensions:
        headers.update(trace_headers(event))  # W3C trace context of the inbound request
    if extra_headers:
        headers.update(extra_headers)
    return OutboundRequest(msg_id, ts, body, headers)


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DISABLE = "disable"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    #: Seconds the receiver asked us to wait (Retry-After), if any.
    retry_after: float | None = None
    #: Whether this counts as an endpoint failure for the circuit breaker.
    endpoint_failure: bool = False


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def classify(status: int, headers: Mapping[str, str], now: float) -> Verdict:
    """What an HTTP response means for this message and this endpoint.

    ``headers`` must have lower-case names.
    """
    if headers.get("webhook-delivery", "").strip().lower() == "abort-message":
        if 200 <= status < 300:
            return Verdict(Outcome.DELIVERED, f"HTTP {status}")
        return Verdict(Outcome.ABORT, f"HTTP {status}; receiver asked to abort this message")
    if 200 <= status < 300:
        return Verdict(Outcome.DELIVERED, f"HTTP {status}")
    if status == 410:
        return Verdict(Outcome.DISABLE, "HTTP 410 Gone: endpoint disabled")
    if status in THROTTLE_STATUSES:
        after = parse_retry_after(headers.get("retry-after"), now)
        return Verdict(Outcome.RETRY, f"HTTP {status}", after, endpoint_failure=status != 429)
    return Verdict(Outcome.RETRY, f"HTTP {status}", endpoint_failure=status >= 500)


def transport_failure(error: BaseException) -> Verdict:
    """A connection error or timeout: retry later; counts against the endpoint."""
    detail = redact_text(str(error))[:200]
    reason = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return Verdict(Outcome.RETRY, reason, endpoint_failure=True)
