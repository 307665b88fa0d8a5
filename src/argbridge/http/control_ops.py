"""Control API for operators: ``GET /control/status`` and ``GET /control/tail``.

- ``/control/status``: one JSON document with every component's readiness, the journal
  (last seq, backlog bytes, paused), per sink (type, started, backlog, cursor, in flight,
  sent, errors, last error, dead letters, pending retries; in cluster mode also the
  internal events producer, ``cluster:events``, marked ``internal``) and per source
  (type, readiness, open streams, received). Read by ``argbridge status``.
- ``/control/tail``: events as they are journaled, as newline-delimited JSON
  (``application/x-ndjson``), one ``{"seq", "appended_at", "event"}`` object per line.
  Query: ``type=PREFIX`` (CloudEvents type prefix), ``after=SEQ`` (default: the last
  ``n`` journaled events, ``n`` default 10), ``follow=1`` (keep streaming new events
  until the client goes away or the daemon stops), ``limit=N`` (stop after N events).
  Memory is bounded: the journal is read in pages of :data:`PAGE` events.

Both are served on the control listener (:mod:`argbridge.http.control`). Error texts
shown here pass through :func:`argbridge.logging.redact_text`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import orjson

from argbridge import __version__
from argbridge.errors import JournalClosed, JournalError
from argbridge.http.asgi import Request, Response, Router, Send, json_response, problem
from argbridge.http.facade import ControlFacade, open_journal
from argbridge.journal import JournalStats
from argbridge.logging import redact_text
from argbridge.sinks.base import Health, WorkerRole

#: Events read from the journal per page while tailing.
PAGE = 200
#: Most events ``n`` may ask for without ``after``.
MAX_BACKLOG = 10_000

_TRUE = {"1", "true", "yes", "on"}


def _sample(app: ControlFacade, name: str, labels: dict[str, str]) -> float:
    value = app.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _errors_of(app: ControlFacade, component: str) -> int:
    total = 0.0
    for family in app.metrics.errors.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("component") == component:
                total += sample.value
    return int(total)


def _sink_status(
    app: ControlFacade,
    name: str,
    sink_type: str,
    worker: WorkerRole,
    health: dict[str, Health],
    stats: JournalStats,
    *,
    health_key: str | None = None,
) -> dict[str, Any]:
    """One sink's row of the status document."""
    h = health.get(health_key or f"sink:{name}")
    return {
        "type": sink_type,
        "ready": bool(h and h.ready),
        "detail": redact_text(h.detail) if h else "",
        "started": worker.started,
        "backlog": stats.backlog_events.get(name, 0),
        "cursor": stats.cursors.get(name, 0),
        "in_flight": worker.in_flight,
        "received": int(
            _sample(
                app,
                "argbridge_component_received_events_total",
                {"component": name, "kind": "sink"},
            )
        ),
        "sent": int(
            _sample(
                app,
                "argbridge_component_sent_events_total",
                {"component": name, "kind": "sink"},
            )
        ),
        "errors": _errors_of(app, name),
        "last_error": redact_text(worker.last_error) if worker.last_error else None,
        "dead_letters": int(_sample(app, "argbridge_sink_dead_letters", {"component": name})),
        "retries_pending": int(_sample(app, "argbridge_sink_retries_pending", {"component": name})),
    }


async def collect_status(app: ControlFacade) -> dict[str, Any]:
    """The status document served at ``/control/status``."""
    health = app.health()
    journal = app.journal
    stats = journal.stats()
    try:
        await app.metrics.refresh(journal)
    except JournalError:
        pass
    sinks: dict[str, Any] = {
        name: _sink_status(app, name, app.settings.sinks[name].type, worker, health, stats)
        for name, worker in app.workers.items()
    }
    # Cluster mode's own events producer (a Kafka sink), marked internal.
    for name, worker in app.internal_workers.items():
        sinks[name] = {
            **_sink_status(app, name, "kafka", worker, health, stats, health_key=name),
            "internal": True,
        }
    sources: dict[str, Any] = {}
    for name in app.sources:
        cfg_source = app.settings.sources[name]
        h = health.get(f"source:{name}")
        sources[name] = {
            "type": cfg_source.type,
            "ready": bool(h and h.ready),
            "detail": redact_text(h.detail) if h else "",
            "open_streams": int(_sample(app, "argbridge_source_open_streams", {"component": name})),
            "received": int(
                _sample(
                    app,
                    "argbridge_component_received_events_total",
                    {"component": name, "kind": "source"},
                )
            ),
            "errors": _errors_of(app, name),
            "reconnects": int(
                _sample(app, "argbridge_source_reconnects_total", {"component": name})
            ),
        }
    not_ready = sorted(n for n, h in health.items() if not h.ready)
    return {
        "instance": app.settings.instance,
        "version": __version__,
        "ready": not not_ready,
        "not_ready": not_ready,
        "paused": stats.paused,
        "stopping": app.stopping.is_set(),
        "config": app.config_status(),
        "cluster": await app.cluster_status(),
        "components": {
            n: {"ready": h.ready, "detail": redact_text(h.detail)} for n, h in health.items()
        },
        "journal": {
            "last_seq": stats.last_seq,
            "backlog_bytes": stats.backlog_bytes,
            "paused": stats.paused,
            "appended": stats.appended,
            "duplicates": stats.duplicates,
            "commits": stats.commits,
        },
        "sinks": sinks,
        "sources": sources,
        "open_streams": sum(s["open_streams"] for s in sources.values()),
        "dead_letters": sum(s["dead_letters"] for s in sinks.values()),
    }


class TailQuery:
    """Validated query of ``/control/tail``."""

    def __init__(self, query: dict[str, list[str]]) -> None:
        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        def integer(name: str, default: int | None, maximum: int | None = None) -> int | None:
            raw = one(name)
            if raw is None or raw == "":
                return default
            if not raw.isdigit():
                raise ValueError(f"{name} must be a non-negative integer")
            value = int(raw)
            if maximum is not None and value > maximum:
                raise ValueError(f"{name} must be at most {maximum}")
            return value

        self.type_prefix = one("type") or ""
        self.after = integer("after", None)
        self.n = integer("n", 10, MAX_BACKLOG) or 0
        self.follow = (one("follow") or "").lower() in _TRUE
        self.limit = integer("limit", None)


class NdjsonTail(Response):
    """A streamed response: journaled events as NDJSON, optionally following new ones."""

    def __init__(self, app: ControlFacade, request: Request, query: TailQuery) -> None:
        super().__init__(200, b"", [], b"application/x-ndjson")
        self.app = app
        self.request = request
        self.query = query
        self.disconnected = False
        self.sent_events = 0

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", b"application/x-ndjson"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_disconnect, tg.cancel_scope.cancel)
            tg.start_soon(self._watch_stopping, tg.cancel_scope.cancel)
            try:
                await self._pump(send)
            except JournalClosed:
                pass
            tg.cancel_scope.cancel()
        if not self.disconnected:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch_disconnect(self, cancel: Callable[[], None]) -> None:
        receive = self.request._receive
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                cancel()
                return

    async def _watch_stopping(self, cancel: Callable[[], None]) -> None:
        await self.app.stopping.wait()
        cancel()

    async def _pump(self, send: Send) -> None:
        journal = self.app.journal
        q = self.query
        cursor = q.after if q.after is not None else max(0, journal.last_seq - q.n)
        while True:
            records = await journal.read_after(cursor, PAGE)
            lines: list[bytes] = []
            for record in records:
                cursor = record.seq
                if q.type_prefix and not record.event.type.startswith(q.type_prefix):
                    continue
                lines.append(
                    orjson.dumps(
                        {
                            "seq": record.seq,
                            "appended_at": record.appended_at,
                            "event": record.event.to_dict(),
                        }
                    )
                    + b"\n"
                )
                self.sent_events += 1
                if q.limit is not None and self.sent_events >= q.limit:
                    break
            if lines:
                await send(
                    {"type": "http.response.body", "body": b"".join(lines), "more_body": True}
                )
            if q.limit is not None and self.sent_events >= q.limit:
                return
            if len(records) == PAGE:
                continue
            if not q.follow:
                return
            await journal.wait_for_events(cursor)


def register(app: ControlFacade, router: Router) -> None:
    async def status(request: Request) -> Response:
        try:
            return json_response(await collect_status(app))
        except (RuntimeError, JournalClosed):
            return problem(503, "Service Unavailable", "the journal is not open")

    async def tail(request: Request) -> Response:
        try:
            query = TailQuery(request.query)
        except ValueError as exc:
            return problem(400, "Bad Request", str(exc))
        if open_journal(app) is None:
            return problem(503, "Service Unavailable", "the journal is not open")
        return NdjsonTail(app, request, query)

    router.add("GET", "/control/status", status)
    router.add("GET", "/control/tail", tail)
