"""Control API for the Arga sources (``argbridge follow`` / ``argbridge start``).

Routes (served on the control listener, access checked by
:class:`argbridge.http.control.ControlAccess`):

- ``POST /control/follow`` ``{"run_id": R, "demo": false, "source": null}`` → 202 and
  the run's state (200 when it was already followed);
- ``GET /control/follow`` → every followed run of every arga source with its status;
- ``POST /control/start/url-run`` ``{"url": U, "prompt": P, ...}`` and
  ``POST /control/start/pr-run`` ``{"repo": R, "branch": B, ...}`` → the daemon starts the
  run with its own API key, follows the SSE response and keeps following the run; the
  answer carries the ``run_id`` (or Arga's error status and detail).

``source`` picks the arga source by name; it may be omitted when there is exactly one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from argbridge.errors import SourceError
from argbridge.http.asgi import Request, Response, Router, json_response, problem
from argbridge.http.facade import ControlFacade

if TYPE_CHECKING:
    from argbridge.sources.arga import ArgaSource

BODY_LIMIT = 64 * 1024
START_KINDS = ("url-run", "pr-run")


def _arga_sources(app: ControlFacade) -> dict[str, ArgaSource]:
    from argbridge.sources.arga import ArgaSource

    return {n: s for n, s in app.sources.items() if isinstance(s, ArgaSource)}


def _pick(app: ControlFacade, name: Any) -> ArgaSource | Response:
    sources = _arga_sources(app)
    if not sources:
        return problem(409, "No Arga source", "this daemon has no source of type arga")
    if name is None:
        if len(sources) > 1:
            return problem(
                400,
                "Ambiguous source",
                f"name one of: {', '.join(sorted(sources))}",
                field="source",
            )
        return next(iter(sources.values()))
    if not isinstance(name, str) or name not in sources:
        return problem(404, "Unknown source", f"arga sources: {', '.join(sorted(sources))}")
    return sources[name]


async def _body(request: Request) -> dict[str, Any] | Response:
    try:
        body = orjson.loads(await request.body(BODY_LIMIT) or b"{}")
    except orjson.JSONDecodeError:
        return problem(400, "Invalid JSON", "the request body is not JSON")
    if not isinstance(body, dict):
        return problem(400, "Invalid body", "the request body must be a JSON object")
    return body


def register(app: ControlFacade, router: Router) -> None:
    async def follow(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        run_id = body.get("run_id")
        if not isinstance(run_id, str) or not run_id or "/" in run_id:
            return problem(
                400, "Invalid run_id", "run_id must be a non-empty string", field="run_id"
            )
        source = _pick(app, body.get("source"))
        if isinstance(source, Response):
            return source
        kind = "demo" if body.get("demo") else "validation"
        try:
            new = await source.follow(run_id, kind, origin="control", force=True)
        except SourceError as exc:
            return problem(503, "Source not running", str(exc))
        state = source.runs[(kind, run_id)]
        return json_response(
            {"source": source.name, "new": new, **state.to_json()}, 202 if new else 200
        )

    async def listing(request: Request) -> Response:
        out = [
            {"source": name, **state.to_json()}
            for name, src in _arga_sources(app).items()
            for state in src.runs.values()
        ]
        return json_response({"runs": out})

    async def start(request: Request) -> Response:
        kind = request.params["kind"]
        if kind not in START_KINDS:
            return problem(404, "Unknown run kind", "use url-run or pr-run")
        body = await _body(request)
        if isinstance(body, Response):
            return body
        source = _pick(app, body.pop("source", None))
        if isinstance(source, Response):
            return source
        try:
            result = await source.start_run(kind, body)
        except SourceError as exc:
            return problem(503, "Source not running", str(exc))
        if "error" in result:
            status = int(result["error"])
            return problem(
                status if status in (400, 404, 409, 422) else 502,
                "Arga refused the run",
                str(result.get("detail", "")),
                upstream_status=status,
            )
        return json_response({"source": source.name, **result}, 202)

    router.add("POST", "/control/follow", follow)
    router.add("GET", "/control/follow", listing)
    router.add("POST", "/control/start/{kind}", start)
