"""The demo's Argus: incident lifecycles posted as signed webhooks to the daemon.

:func:`lifecycle` (pure) builds the three webhook bodies of one incident — ``created``
(status ``open``), ``acknowledged`` and ``resolved`` — in the shapes of the packaged
sample (``samples/replay.jsonl``) that :mod:`argbridge.normalize.argus` maps to
``argus.incident.<action>``. :class:`ArgusSender` posts them through the daemon's real
verified path, ``POST /webhooks/<source>``, signed with Standard Webhooks
(:func:`argbridge.signing.signed_headers`), with a fresh ``webhook-id`` per delivery.
Incidents overlap: each tick opens one incident and moves the two previous ones on, so
a steady stream of creates, acks and resolves arrives. A 503 (backpressure) is retried
after its ``Retry-After``, like a well-behaved sender.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import orjson

from argbridge.signing import signed_headers

#: (title, description, severity, service, team) of the incidents the demo opens.
CATALOGUE: tuple[tuple[str, str, str, str, str], ...] = (
    ("Payments API returning 500s", "Latency spike, error rate >50%", "P1", "svc-payments",
     "team-core"),
    ("Checkout latency above SLO", "p99 at 2.4 s for 10 min", "P2", "svc-checkout", "team-web"),
    ("Search index lagging", "Indexer 15 min behind", "P3", "svc-search", "team-data"),
    ("Login page slow in eu-west", "TTFB doubled since deploy", "P2", "svc-auth", "team-core"),
    ("Nightly export failed", "Export job exited with code 137", "P4", "svc-export",
     "team-data"),
)  # fmt: skip
ACTIONS = ("created", "acknowledged", "resolved")
_STATUS = {"created": "open", "acknowledged": "acknowledged", "resolved": "resolved"}
_PREVIOUS = {"created": None, "acknowledged": "open", "resolved": "acknowledged"}


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def incident_id(number: int) -> str:
    return f"INC-{4000 + number}"


def webhook_body(number: int, action: str, now: float) -> dict[str, Any]:
    """The Argus webhook body for ``action`` of incident ``number``."""
    title, description, severity, service, team = CATALOGUE[number % len(CATALOGUE)]
    incident: dict[str, Any] = {
        "id": incident_id(number),
        "title": title,
        "severity": severity,
        "status": _STATUS[action],
        "service_id": service,
        "team_id": team,
    }
    body: dict[str, Any] = {"event": f"incident.{action}", "incident": incident}
    if action == "created":
        incident["description"] = description
        incident["auto_classified"] = True
        incident["classification_confidence"] = round(0.7 + 0.05 * (number % 6), 2)
        incident["created_at"] = _rfc3339(now)
    else:
        body["previous_status"] = _PREVIOUS[action]
        body["timestamp"] = _rfc3339(now)
    return body


def lifecycle(number: int, now: float) -> list[dict[str, Any]]:
    """created → acknowledged → resolved of one incident."""
    return [webhook_body(number, action, now) for action in ACTIONS]


@dataclass(frozen=True, slots=True)
class Step:
    number: int
    action: str


def schedule() -> Iterator[list[Step]]:
    """Per tick: open incident n, acknowledge n-1, resolve n-2 (overlapping lifecycles)."""
    for n in itertools.count():
        steps = [Step(n, "created")]
        if n >= 1:
            steps.append(Step(n - 1, "acknowledged"))
        if n >= 2:
            steps.append(Step(n - 2, "resolved"))
        yield steps


class ArgusSender:
    """Posts signed incident webhooks to the daemon every ``interval`` seconds."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        interval: float = 2.0,
        max_incidents: int = 0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._secret = secret
        self.interval = interval
        self.max_incidents = max_incidents
        self.now = now
        self.sent = 0
        self.accepted = 0
        self.rejected = 0
        self.retried = 0
        self.recent: deque[str] = deque(maxlen=5)

    def __repr__(self) -> str:
        return f"ArgusSender(url={self.url!r}, sent={self.sent}, accepted={self.accepted})"

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            for steps in schedule():
                if self.max_incidents and steps[0].number >= self.max_incidents:
                    steps = [s for s in steps if s.number < self.max_incidents]
                    if not steps:
                        return
                for step in steps:
                    await self.post(client, webhook_body(step.number, step.action, self.now()))
                await anyio.sleep(self.interval)

    async def post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> int:
        """POST one webhook (retrying 503 and connection errors); returns the status."""
        raw = orjson.dumps(body)
        msg_id = f"msg_{uuid.uuid4().hex}"
        self.sent += 1
        while True:
            headers = signed_headers(
                "standard-webhooks", [self._secret], raw, now=self.now(), msg_id=msg_id
            )
            headers["content-type"] = "application/json"
            try:
                response = await client.post(self.url, content=raw, headers=headers)
            except httpx.TransportError:
                self.retried += 1
                await anyio.sleep(1.0)
                continue
            if response.status_code == 503:
                self.retried += 1
                await anyio.sleep(_retry_after(response.headers.get("retry-after")))
                continue
            if response.status_code == 200:
                self.accepted += 1
                self.recent.append(f"{body['event']} {body['incident']['id']}")
            else:
                self.rejected += 1
            return response.status_code


def _retry_after(value: str | None) -> float:
    try:
        return min(30.0, max(0.1, float(value or 1)))
    except ValueError:
        return 1.0
