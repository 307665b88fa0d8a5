"""The reconnect policy of the Arga stream readers (SSE results and demo-runner WebSocket).

Owns: classifying how a connection attempt or session ended into a :class:`Decision`
(reconnect after a delay, stop, or done), and the delays themselves. Pure: no I/O, no
sleeping; the caller sleeps ``decision.delay`` on its injected clock, so tests run
whole schedules instantly.

Outcomes (DESIGN.md principle 4, protocols.md §1-2):

========================================  =========================================
network error, read timeout, EOF of a      reconnect: exponential backoff with full
non-terminal run, WS close ≠ 1008          jitter (``initial``, ``factor``, ``cap``)
429, 408, 5xx                              reconnect, never sooner than ``Retry-After``
server ``retry:`` (ms)                     a floor under every later delay
401, 403, WS close 1008 / 4401 / 4403      stop + alert (``auth_failed``), no retry
404, 410, WS close 4404, a 1008 "not       stop (``not_found``: "run not found"; the
found"                                     follower raises a ``run_not_found`` alert)
200 with a non-``text/event-stream`` type  stop (``bad_content_type``), no retry loop
204 and any other status                   stop (``http_<status>``), no retry loop
terminal event / ``done``                  done
========================================  =========================================

The backoff restarts from ``initial`` only after a session made progress (delivered at
least one event): a server that accepts and then drops us at once (the websockets
zero-delay storm) keeps backing off.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from argbridge.backoff import Backoff

EVENT_STREAM = "text/event-stream"
_RETRY_STATUSES = frozenset({408, 425, 429})
AUTH_CLOSE_CODES = frozenset({1008, 4401, 4403})
NOT_FOUND_CLOSE_CODES = frozenset({4404})


class Action(enum.Enum):
    RECONNECT = "reconnect"
    STOP = "stop"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do next: ``action``, after ``delay`` seconds; ``reason`` names the cause
    (a stable token used in logs, metrics and the alert event); ``alert`` asks for an
    ``argbridge.source.auth_failed`` event."""

    action: Action
    reason: str
    delay: float = 0.0
    alert: bool = False
    detail: str = ""

    @property
    def stops(self) -> bool:
        return self.action is not Action.RECONNECT


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); ``None`` if
    absent or unreadable. ``now`` is the wall clock (epoch seconds)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def _says_not_found(reason: str) -> bool:
    """A policy close (1008) whose reason says the stream is not found ("Test run not
    found") is a missing stream, not refused credentials."""
    return "not found" in reason.lower()


def content_type_essence(value: str | None) -> str:
    """``text/event-stream; charset=x`` → ``text/event-stream`` (lower-cased)."""
    return (value or "").split(";", 1)[0].strip().lower()


class ReconnectPolicy:
    """Decisions and delays for one stream (one per followed run)."""

    def __init__(
        self,
        *,
        initial: float = 0.5,
        cap: float = 30.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
        jitter: bool = True,
    ) -> None:
        self.backoff = Backoff(
            base=initial, cap=cap, factor=factor, jitter=jitter, rng=rng or random.Random()
        )
        self.cap = cap
        #: The server's ``retry:`` in seconds (SSE), a floor under every delay.
        self.server_retry: float | None = None
        #: Connection attempts made (for logs and tests).
        self.attempts = 0
        self.failures = 0

    # -- bookkeeping -------------------------------------------------------------------

    def attempt(self) -> None:
        """Count one connection attempt."""
        self.attempts += 1

    def progressed(self) -> None:
        """The session delivered an event: the next failure starts from ``initial``."""
        self.failures = 0
        self.backoff.reset()

    def set_server_retry(self, retry_ms: int | None) -> None:
        if retry_ms is not None:
            self.server_retry = retry_ms / 1000.0

    def _reconnect(self, reason: str, at_least: float = 0.0, detail: str = "") -> Decision:
        self.failures += 1
        floor = max(at_least, self.server_retry or 0.0)
        return Decision(Action.RECONNECT, reason, self.backoff.next_delay(floor), detail=detail)

    # -- outcomes ----------------------------------------------------------------------

    def on_network_error(self, detail: str = "") -> Decision:
        """Connect failure, reset, read timeout, truncated body."""
        return self._reconnect("network_error", detail=detail)

    def on_eof(self, *, terminal: bool) -> Decision:
        """The server ended the body cleanly."""
        if terminal:
            return Decision(Action.DONE, "terminal")
        return self._reconnect("eof")

    def on_response(
        self,
        status: int,
        content_type: str | None,
        retry_after: str | None = None,
        *,
        now: float = 0.0,
        expect: str = EVENT_STREAM,
    ) -> Decision | None:
        """Classify a response head; ``None`` means "good, read the body"."""
        if status == 200:
            if content_type_essence(content_type) != expect:
                return Decision(
                    Action.STOP,
                    "bad_content_type",
                    detail=f"expected {expect}, got {content_type_essence(content_type) or '-'}",
                )
            return None
        if status in (401, 403):
            return Decision(Action.STOP, "auth_failed", alert=True, detail=f"HTTP {status}")
        if status in (404, 410):
            return Decision(Action.STOP, "not_found", detail="run not found")
        if status in _RETRY_STATUSES or 500 <= status <= 599:
            wait = parse_retry_after(retry_after, now)
            return self._reconnect(f"http_{status}", at_least=min(wait or 0.0, 3600.0))
        return Decision(Action.STOP, f"http_{status}", detail=f"unexpected HTTP {status}")

    def on_ws_close(self, code: int | None, *, done: bool = False, reason: str = "") -> Decision:
        """A WebSocket session ended with close ``code`` (``None``: no close frame)."""
        if done:
            return Decision(Action.DONE, "done")
        detail = f"close {code} {reason}".strip()
        if code in AUTH_CLOSE_CODES and not _says_not_found(reason):
            return Decision(Action.STOP, "auth_failed", alert=True, detail=detail)
        if code in AUTH_CLOSE_CODES or code in NOT_FOUND_CLOSE_CODES:
            return Decision(Action.STOP, "not_found", detail=detail)
        return self._reconnect("ws_closed" if code in (1000, 1001) else "ws_abnormal_close")

    def on_ws_handshake_status(self, status: int, retry_after: str | None, now: float) -> Decision:
        """The WebSocket handshake was refused with an HTTP status."""
        decision = self.on_response(status, None, retry_after, now=now, expect="")
        if decision is None:  # a 200 instead of a 101 upgrade
            return Decision(Action.STOP, "http_200", detail="no WebSocket upgrade")
        return decision
