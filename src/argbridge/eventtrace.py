"""Where did my event go: one event (by id) or every event of a run/incident (by subject),
when it was journaled, its type and source, and per sink whether it was delivered (the
sink's cursor passed it), is pending, retrying (attempt, next due, last error),
dead-lettered, or not routed to that sink at all.

Owns the lookup (:func:`trace_events`) and its JSON shape. It reads through the
journal's public API only (:class:`TraceJournal`): a scan of what retention keeps
(pages of :meth:`read_after`, a substring test on each stored body before decoding it),
the sinks' retries and dead letters. Nothing is added to the append path: no index,
no extra write (issue 11 item 7 allows 5% there; this costs 0%). The scan is bounded by
what retention keeps (``journal.retain_delivered`` plus the undelivered backlog).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from argbridge.events import CloudEvent
from argbridge.journal import DeadLetter, JournalRecord, RetryItem
from argbridge.router import Router

#: Records read per journal page while scanning.
PAGE = 2000
#: Events reported at most per query (a subject with more is truncated).
MAX_EVENTS = 1000
#: Retries and dead letters read at most per sink.
MAX_SIDE_ROWS = 100_000


class TraceJournal(Protocol):
    """The journal reads a trace needs."""

    @property
    def last_seq(self) -> int: ...

    def cursor(self, sink: str) -> int: ...

    async def read_after(self, after_seq: int, limit: int) -> list[JournalRecord]: ...

    async def due_retries(self, sink: str, now: float, limit: int = 100) -> list[RetryItem]: ...

    async def dead_letters(
        self,
        sink: str | None = None,
        *,
        dlids: Sequence[int] | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[DeadLetter]: ...


@dataclass(frozen=True, slots=True)
class SinkState:
    """One sink's view of one event."""

    state: str  # delivered | pending | retrying | dead-lettered | not routed
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, **self.detail}


@dataclass(frozen=True, slots=True)
class EventTrace:
    event: CloudEvent
    seq: int
    #: ``None`` when retention already deleted the event (known from a retry/dead letter).
    journaled_at: float | None
    sinks: dict[str, SinkState]

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "id": e.id,
            "seq": self.seq,
            "type": e.type,
            "source": e.source,
            "subject": e.subject,
            "journaled_at": self.journaled_at,
            "sinks": {name: s.to_json() for name, s in self.sinks.items()},
        }


@dataclass(frozen=True, slots=True)
class TraceResult:
    events: list[EventTrace]
    #: Retained events scanned.
    scanned: int
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "events": [t.to_json() for t in self.events],
            "scanned": self.scanned,
            "truncated": self.truncated,
        }


def _marker(name: str, value: str) -> bytes:
    # How the stored body (CloudEvent.to_json, compact orjson) spells the attribute.
    return b'"' + name.encode() + b'":' + orjson.dumps(value)


async def trace_events(
    journal: TraceJournal,
    router: Router,
    sinks: Sequence[str],
    *,
    event_id: str | None = None,
    subject: str | None = None,
    max_events: int = MAX_EVENTS,
) -> TraceResult:
    """Trace the event ``event_id``, or every event whose ``subject`` is ``subject``."""
    if (event_id is None) == (subject is None):
        raise ValueError("give exactly one of an event id or a subject")
    name, value = ("id", event_id) if event_id is not None else ("subject", subject)
    assert value is not None
    marker = _marker(name, value)

    def wanted(event: CloudEvent) -> bool:
        return (event.id if name == "id" else event.subject) == value

    found: dict[str, tuple[CloudEvent, int, float | None]] = {}
    scanned, after, truncated = 0, 0, False
    last = journal.last_seq
    while after < last and not truncated:
        page = await journal.read_after(after, PAGE)
        if not page:
            break
        for record in page:
            scanned += 1
            if marker in record.body and wanted(record.event):
                found[record.event.id] = (record.event, record.seq, record.appended_at)
                if len(found) >= max_events:
                    truncated = True
                    break
        after = page[-1].seq
        if event_id is not None and found:
            break

    retries: dict[tuple[str, str], RetryItem] = {}
    for sink in sinks:
        for item in await journal.due_retries(sink, math.inf, MAX_SIDE_ROWS):
            if wanted(item.event):
                retries[(sink, item.event.id)] = item
                found.setdefault(item.event.id, (item.event, item.seq, None))
    dead: dict[tuple[str, str], DeadLetter] = {}
    for letter in await journal.dead_letters(None, limit=MAX_SIDE_ROWS):
        if wanted(letter.event):
            dead[(letter.sink, letter.event.id)] = letter  # the latest wins (oldest first)
            found.setdefault(letter.event.id, (letter.event, letter.seq, None))

    traces = []
    for eid, (event, seq, at) in sorted(found.items(), key=lambda kv: kv[1][1]):
        states: dict[str, SinkState] = {}
        for sink in sinks:
            states[sink] = _state(
                journal, router, sink, event, seq, retries.get((sink, eid)), dead.get((sink, eid))
            )
        traces.append(EventTrace(event, seq, at, states))
    return TraceResult(traces, scanned, truncated)


def _state(
    journal: TraceJournal,
    router: Router,
    sink: str,
    event: CloudEvent,
    seq: int,
    retry: RetryItem | None,
    dead: DeadLetter | None,
) -> SinkState:
    if retry is not None:
        return SinkState(
            "retrying",
            {"attempt": retry.attempt, "next_due": retry.due_at, "last_error": retry.last_error},
        )
    if dead is not None:
        return SinkState(
            "dead-lettered",
            {
                "reason": dead.reason,
                "attempts": dead.attempts,
                "failed_at": dead.failed_at,
                "dlid": dead.dlid,
            },
        )
    if not router.routes_for(sink, event):
        return SinkState("not routed")
    cursor = journal.cursor(sink)
    if cursor >= seq:
        return SinkState("delivered", {"cursor": cursor})
    return SinkState("pending", {"cursor": cursor, "behind": seq - cursor})
