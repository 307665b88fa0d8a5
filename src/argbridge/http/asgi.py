"""A lean raw-ASGI layer: request/response values, a route table, problem+json errors.

No framework: a framework layer costs ~40% of request throughput on this hardware, and
the webhook path needs only method + path dispatch, headers and a size-bounded body.

Bodies are streamed: :meth:`Request.body` refuses a declared ``Content-Length`` over the
limit before reading anything, stops at the first chunk that passes the limit
(:class:`BodyTooLarge` → 413 with ``Connection: close``, so the rest is never read), and
bounds the time the whole body may take (:class:`BodyTimeout` → 408, slow-loris). Literal
routes win over ``{param}`` routes; an unexpected handler error is a logged 500, never a
dropped connection.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio
import orjson

from argbridge.logging import get_logger

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


#: Before a 413, at most this much of the rest of the body is read and dropped (never kept),
#: for at most this long, so a well-behaved client gets to read the answer.
DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 0.5


class BodyTooLarge(Exception):
    """The request body exceeded the limit (detected while streaming)."""


class ClientDisconnected(Exception):
    """The client went away before the body was complete."""


class BodyTimeout(Exception):
    """The body did not arrive completely within the allowed time (slow-loris)."""


class _Deadlines:
    """The body-read deadlines of one event loop, served by one loop timer.

    Arming a loop timer per request (``call_later`` + ``cancel`` + ``current_task``) was
    1.9 µs of every webhook; a dict entry is 0.5 µs. The timer is armed for the earliest
    deadline; when it fires it cancels the tasks whose deadline has passed (marking
    their entry, so :meth:`Request.body` can tell its own timeout from an outside
    cancellation) and re-arms for the earliest remaining one. Deadlines fire at their
    time, not on a coarser tick.
    """

    __slots__ = ("__weakref__", "_at", "_due", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[asyncio.Task[Any], list[Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def add(self, task: asyncio.Task[Any], seconds: float) -> list[Any]:
        """Cancel ``task`` in ``seconds`` unless :meth:`remove` comes first; returns the
        entry (``entry[1]`` becomes ``True`` when the deadline fired)."""
        at = self._loop.time() + seconds
        entry = [at, False]
        self._due[task] = entry
        if at < self._at:
            self._arm(at)
        return entry

    def remove(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._at = at
        self._timer = self._loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        self._at = math.inf
        now = self._loop.time()
        earliest = math.inf
        for task, entry in list(self._due.items()):
            if entry[0] <= now:
                del self._due[task]
                entry[1] = True
                task.cancel()
            elif entry[0] < earliest:
                earliest = entry[0]
        if earliest < math.inf:
            self._arm(earliest)


_DEADLINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)


def _deadlines(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    deadlines = _DEADLINES.get(loop)
    if deadlines is None:
        deadlines = _DEADLINES[loop] = _Deadlines(loop)
    return deadlines


class Request:
    """One HTTP request: method, path, lower-cased headers, query, streamed body."""

    __slots__ = (
        "_done",
        "_read",
        "_receive",
        "headers",
        "method",
        "params",
        "path",
        "query_string",
        "scope",
    )

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query_string: bytes = scope.get("query_string", b"")
        self.headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        self.params: dict[str, str] = {}
        self._read = 0
        self._done = False

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.query_string.decode("latin-1"))

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    async def body(self, limit: int | None = None, deadline: float | None = None) -> bytes:
        """Read the whole body; raises :class:`BodyTooLarge` as soon as ``limit`` is passed
        (a declared ``Content-Length`` over the limit is refused before reading) and
        :class:`BodyTimeout` when it takes longer than ``deadline`` seconds in all."""
        declared = self.headers.get("content-length")
        if limit is not None and declared is not None and declared.isdigit():
            if int(declared) > limit:
                raise BodyTooLarge
        if deadline is None:
            return await self._read_body(limit)
        # A shared loop timer instead of a cancel scope: this runs on every webhook, and
        # a deadline that (almost) never fires should cost next to nothing (_Deadlines).
        # The deadline can only fire while this task waits in receive(), so its
        # cancellation always lands inside the try block below (turned into BodyTimeout).
        task = asyncio.current_task()
        assert task is not None
        deadlines = _deadlines(task.get_loop())
        entry = deadlines.add(task, deadline)
        try:
            return await self._read_body(limit)
        except asyncio.CancelledError:
            if entry[1] and task.uncancel() == 0:
                raise BodyTimeout from None
            raise
        finally:
            deadlines.remove(task)

    async def _read_body(self, limit: int | None) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            self._done = not more
            if chunk:
                size += len(chunk)
                self._read += len(chunk)
                if limit is not None and size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
            if not more:
                return b"".join(chunks)

    async def discard(self, max_bytes: int, deadline: float) -> bool:
        """Read and drop the rest of the body, up to ``max_bytes`` more within ``deadline``
        seconds; ``True`` when the body was consumed completely.

        Used before refusing a body so that closing the connection does not reset it
        (unread data turns the close into a TCP RST that can destroy our response);
        a sender of more than that just gets the connection closed.
        """
        if self._done:
            return True
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit():
            if int(declared) - self._read > max_bytes:
                return False
        dropped = 0
        with anyio.move_on_after(deadline):
            while dropped <= max_bytes:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    return False
                dropped += len(message.get("body", b""))
                if not message.get("more_body", False):
                    self._done = True
                    return True
        return False

    async def json(self, limit: int | None = 1024 * 1024) -> Any:
        return orjson.loads(await self.body(limit))


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes | None = b"application/json"

    async def send(self, send: Send) -> None:
        headers = list(self.headers)
        if self.content_type is not None:
            headers.append((b"content-type", self.content_type))
        headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        status,
        orjson.dumps(obj),
        [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
    )


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """An RFC 9457 ``application/problem+json`` response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(
        status,
        orjson.dumps(body),
        [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
        b"application/problem+json",
    )


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    parts: tuple[str, ...]
    handler: Handler


class Router:
    """Method + path dispatch; ``{name}`` segments become ``request.params``.

    Literal routes are looked up in a dict first (the webhook hot path), then routes with
    parameters in the order they were added.
    """

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._exact: dict[tuple[str, str], Handler] = {}
        self._log = get_logger(component="http", kind="service")

    def add(self, method: str, path: str, handler: Handler) -> None:
        parts = tuple(path.strip("/").split("/"))
        route = Route(method.upper(), parts, handler)
        if any(p.startswith("{") and p.endswith("}") for p in parts):
            self._routes.append(route)
        else:
            self._exact.setdefault((route.method, "/".join(parts)), handler)
            # Literal routes go before every parameterised one (they are more specific).
            literal = sum(1 for r in self._routes if not any(p.startswith("{") for p in r.parts))
            self._routes.insert(literal, route)

    def allowed(self, path: str) -> list[str]:
        """Methods some route accepts for ``path``."""
        parts = tuple(path.strip("/").split("/"))
        return sorted({r.method for r in self._routes if _matches(r.parts, parts) is not None})

    def match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        """``(handler, params, path_known)``; ``path_known`` tells 405 from 404."""
        exact = self._exact.get((method, path.strip("/")))
        if exact is not None:
            return exact, {}, True
        parts = tuple(path.strip("/").split("/"))
        path_known = False
        for route in self._routes:
            params = _matches(route.parts, parts)
            if params is None:
                continue
            path_known = True
            if route.method == method:
                return route.handler, params, True
        return None, {}, path_known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        handler, params, known = self.match(scope["method"], scope["path"])
        if handler is None:
            if known:
                allow = ", ".join(self.allowed(scope["path"]))
                response = problem(405, "Method Not Allowed", headers={"allow": allow})
            else:
                response = problem(404, "Not Found")
            await response.send(send)
            return
        request = Request(scope, receive)
        request.params = params
        try:
            response = await handler(request)
        except BodyTooLarge:
            await request.discard(DRAIN_BYTES, DRAIN_SECONDS)
            response = problem(413, "Payload Too Large", headers={"connection": "close"})
        except BodyTimeout:
            response = problem(
                408,
                "Request Timeout",
                "the request body did not arrive in time",
                headers={"connection": "close"},
            )
        except ClientDisconnected:
            return
        except Exception as exc:
            self._log.error("http.handler_failed", path=scope["path"], error=exc, exc_info=exc)
            response = problem(500, "Internal Server Error")
        await response.send(send)


def _matches(want_parts: tuple[str, ...], parts: tuple[str, ...]) -> dict[str, str] | None:
    if len(want_parts) != len(parts):
        return None
    params: dict[str, str] = {}
    for want, got in zip(want_parts, parts, strict=True):
        if want.startswith("{") and want.endswith("}"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params
