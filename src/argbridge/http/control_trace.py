"""Control API for event tracing (``argbridge trace``).

- ``GET /control/trace?id=EVENT_ID`` — one event: when it was journaled, type, source,
  and per sink delivered / pending / retrying / dead-lettered / not routed;
- ``GET /control/trace?subject=S`` — every retained event of a run or incident.

404 (problem JSON) when nothing matches what the journal keeps. The lookup itself is
:mod:`argbridge.eventtrace`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from argbridge.eventtrace import trace_events
from argbridge.http.asgi import Request, Response, json_response, problem
from argbridge.http.asgi import Router as HttpRouter
from argbridge.http.control import check_access
from argbridge.router import Router

if TYPE_CHECKING:
    from argbridge.runtime import App


def register(app: App, router: HttpRouter) -> None:
    async def trace(request: Request) -> Response:
        denied = check_access(app, request)
        if denied is not None:
            return denied
        query = request.query
        event_id = (query.get("id") or [""])[-1] or None
        subject = (query.get("subject") or [""])[-1] or None
        if (event_id is None) == (subject is None):
            return problem(400, "Bad Request", "give exactly one of ?id= or ?subject=")
        # The routes of the running settings (what "not routed" is judged by): only what
        # the control API's view of the daemon has (settings, journal, sinks).
        router = Router.from_settings(app.settings)
        result = await trace_events(
            app.journal, router, list(app.sinks), event_id=event_id, subject=subject
        )
        if not result.events:
            what = f"event {event_id!r}" if event_id else f"subject {subject!r}"
            return problem(
                404,
                "Not Found",
                f"no {what} in what the journal keeps ({result.scanned} retained events "
                "scanned; delivered events are kept for journal.retain_delivered)",
            )
        return json_response(result.to_json())

    router.add("GET", "/control/trace", trace)
