"""Control API for dead letters and replay (``argbridge dlq …``, ``argbridge replay``).

- ``GET  /control/dlq?sink=&limit=`` — dead letters, oldest first;
- ``POST /control/dlq/replay`` ``{"sink"?, "ids"?: [dlid…], "since"?}`` — move matching
  dead letters back into the retry table (due now), re-enable a webhook endpoint
  disabled by 410, and wake the sinks' retry loops; answers how many were requeued;
- ``POST /control/replay`` ``{"sink", "since"}`` — rewind the sink's cursor to the first
  retained event appended at or after ``since``; the sink re-delivers from there;
- ``GET  /control/sinks/{name}/progress`` — cursor, newest seq, backlog, pending retries
  and dead letters (what the CLI polls to show progress).

``since`` is an RFC 3339 time, Unix seconds, or a duration ago (``"2h"``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from argbridge.delivery.timespec import parse_since
from argbridge.http.asgi import Request, Response, Router, json_response, problem
from argbridge.http.facade import ControlFacade
from argbridge.logging import get_logger
from argbridge.sinks.base import SelfDisabling, Wakeable

Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body(64 * 1024)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


def register(app: ControlFacade, router: Router) -> None:
    log = get_logger(component="control", kind="service")

    def known_sink(name: Any, *, required: bool = False) -> str | None:
        if name is None:
            if required:
                raise _BadRequest("'sink' is required")
            return None
        if not isinstance(name, str) or name not in app.settings.sinks:
            raise LookupError(f"no sink named {name!r} (known: {', '.join(app.settings.sinks)})")
        return name

    def since_of(value: Any, *, required: bool = False) -> float | None:
        if value is None:
            if required:
                raise _BadRequest("'since' is required")
            return None
        if not isinstance(value, str | int | float):
            raise _BadRequest("'since' must be a time string or Unix seconds")
        try:
            return parse_since(value, app.clock.time())
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None

    def wrap(fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                return await fn(request)
            except _BadRequest as exc:
                return problem(400, "Bad Request", exc.detail)
            except LookupError as exc:
                return problem(404, "Not Found", str(exc))

        return handler

    async def list_dead_letters(request: Request) -> Response:
        query = request.query
        sink = known_sink(query.get("sink", [None])[0])
        try:
            limit = int(query.get("limit", ["100"])[0])
        except ValueError:
            raise _BadRequest("'limit' must be an integer") from None
        limit = max(1, min(limit, 10_000))
        letters = await app.journal.dead_letters(sink, limit=limit)
        total = await app.journal.count_dead_letters(sink)
        items = [
            {
                "id": d.dlid,
                "sink": d.sink,
                "seq": d.seq,
                "event_id": d.event.id,
                "type": d.event.type,
                "subject": d.event.subject,
                "reason": d.reason,
                "attempts": d.attempts,
                "failed_at": d.failed_at,
            }
            for d in letters
        ]
        return json_response({"total": total, "items": items})

    async def replay_dead_letters(request: Request) -> Response:
        body = await _body(request)
        sink = known_sink(body.get("sink"))
        ids = body.get("ids")
        if ids is not None and (
            not isinstance(ids, list) or not all(isinstance(i, int) for i in ids) or not ids
        ):
            raise _BadRequest("'ids' must be a non-empty list of dead-letter ids")
        since = since_of(body.get("since"))
        targets = [sink] if sink else list(app.settings.sinks)
        for name in targets:
            target = app.sinks.get(name)
            if isinstance(target, SelfDisabling):
                await target.enable()
        count = await app.journal.requeue_dead_letters(sink, dlids=ids, since=since)
        for name in targets:
            target = app.sinks.get(name)
            if isinstance(target, Wakeable):
                target.wake()
            app.metrics.dead_letters.labels(name).set(await app.journal.count_dead_letters(name))
        log.info("dlq.replay", sink=sink, ids=ids, since=since, requeued=count)
        return json_response({"requeued": count, "sinks": targets})

    async def replay_journal(request: Request) -> Response:
        body = await _body(request)
        sink = known_sink(body.get("sink"), required=True)
        assert sink is not None
        since = since_of(body.get("since"), required=True)
        assert since is not None
        first = await app.journal.first_seq_since(since)
        if first is None:
            raise LookupError("no retained event was appended at or after that time")
        await app.journal.rewind(sink, first - 1)
        worker = app.workers.get(sink)
        if worker is not None:
            worker.poke()
        last = app.journal.last_seq
        log.info("replay", sink=sink, since=since, from_seq=first, to_seq=last)
        return json_response(
            {"sink": sink, "from_seq": first, "to_seq": last, "events": last - first + 1}
        )

    async def progress(request: Request) -> Response:
        sink = known_sink(request.params["name"], required=True)
        assert sink is not None
        journal = app.journal
        return json_response(
            {
                "sink": sink,
                "cursor": journal.cursor(sink),
                "last_seq": journal.last_seq,
                "backlog": journal.backlog(sink),
                "retries": await journal.count_retries(sink),
                "dead_letters": await journal.count_dead_letters(sink),
            }
        )

    router.add("GET", "/control/dlq", wrap(list_dead_letters))
    router.add("POST", "/control/dlq/replay", wrap(replay_dead_letters))
    router.add("POST", "/control/replay", wrap(replay_journal))
    router.add("GET", "/control/sinks/{name}/progress", wrap(progress))
