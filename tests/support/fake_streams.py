"""A scriptable upstream on a free loopback port for the generic sources and profiles.

Real HTTP, SSE and WebSocket through uvicorn (raw ASGI, so a stream can be dropped
mid-frame). Tests add routes (exact paths) with the helpers here: :class:`SSEStream`
(frames published by the test, optional drop after N frames, ``Last-Event-ID``
honoured when frames carry ids), :class:`Listing` (a paged list whose items the test
changes, also between two page reads), :class:`WsFeed` (messages then a close code),
and :meth:`FakeUpstream.fail` to queue misbehaving answers (401, 429 + Retry-After,
5xx, malformed JSON) on a path. The Argus E2E, Argos CI and Argos Omni fakes in
:mod:`tests.support.fake_vendors` are configurations of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio
import anyio.lowlevel
import orjson

from argbridge.http import embed

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Drop(Exception):
    """Raised inside the app: uvicorn aborts the connection (a dropped stream)."""


@dataclass
class FakeRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


Handler = Callable[[FakeRequest, Send, Receive], Awaitable[None]]


async def send_json(
    send: Send, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    await send_raw(send, status, raw, {"content-type": "application/json", **(headers or {})})


async def send_raw(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass
class Scripted:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass
class FakeUpstream:
    base: str = ""
    ws_base: str = ""
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[FakeRequest] = field(default_factory=list)
    queued: dict[str, list[Scripted]] = field(default_factory=dict)
    #: Set whenever a request arrives (tests wait on it).
    changed: anyio.Event = field(default_factory=anyio.Event)

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def fail(
        self,
        path: str,
        status: int,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests to ``path`` with ``status``."""
        raw = body if body is not None else orjson.dumps({"error": {"status": status}})
        for _ in range(times):
            self.queued.setdefault(path, []).append(
                Scripted(status, raw, {"content-type": "application/json", **(headers or {})})
            )

    def hits(self, path: str, method: str | None = None) -> list[FakeRequest]:
        return [r for r in self.requests if r.path == path and method in (None, r.method)]

    async def wait_for(self, predicate: Callable[[], bool], limit: float = 10.0) -> None:
        with anyio.fail_after(limit):
            while not predicate():
                changed = self.changed
                await changed.wait()

    def _bump(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        body = b""
        if scope["type"] == "http":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        method = scope.get("method", "WS")
        request = FakeRequest(method, scope["path"], query, headers, body)
        self.requests.append(request)
        self._bump()
        queued = self.queued.get(scope["path"])
        if queued and scope["type"] == "http":
            answer = queued.pop(0)
            await send_raw(send, answer.status, answer.body, answer.headers)
            return
        handler = self.routes.get((method, scope["path"]))
        if handler is None:
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": 4404})
                return
            await send_json(send, 404, {"error": {"code": "NOT_FOUND", "status": 404}})
            return
        await handler(request, send, receive)


@contextlib.asynccontextmanager
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    sock = embed.bind()
    port = sock.getsockname()[1]
    fake.base = f"http://127.0.0.1:{port}"
    fake.ws_base = f"ws://127.0.0.1:{port}"
    async with embed.embedded(
        fake,
        sock,
        shutdown_timeout=1,
        force_exit=True,
        ws="websockets-sansio",
        log_level="critical",
        ws_ping_interval=None,
    ):
        yield fake


def sse_frame(data: Any, *, event: str | None = None, id: str | None = None) -> bytes:
    out = b""
    if event is not None:
        out += b"event: " + event.encode() + b"\n"
    if id is not None:
        out += b"id: " + id.encode() + b"\n"
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return out + b"data: " + raw + b"\n\n"


@dataclass
class SSEStream:
    """Frames the test publishes; each session sends them from the start (or after
    ``Last-Event-ID`` when ``resume`` and frames carry ids ``1..n``), then waits for
    more until :attr:`ended`."""

    frames: list[bytes] = field(default_factory=list)
    ended: bool = False
    #: Drop the connection (abruptly) once, after this many frames of a session.
    drop_after: int | None = None
    #: The drop leaves half a frame on the wire.
    half_frame: bool = True
    resume: bool = True
    sessions: int = 0
    open: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)

    def publish(self, *frames: bytes, end: bool = False) -> None:
        self.frames.extend(frames)
        self.ended = self.ended or end
        self.changed.set()
        self.changed = anyio.Event()

    async def handler(self, request: FakeRequest, send: Send, receive: Receive) -> None:
        self.sessions += 1
        start = 0
        last = request.headers.get("last-event-id", "")
        if self.resume and last.isdigit():
            start = int(last)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        self.open += 1
        sent = 0
        pos = start
        try:
            while True:
                while pos < len(self.frames):
                    frame = self.frames[pos]
                    if self.drop_after is not None and sent >= self.drop_after:
                        self.drop_after = None
                        if self.half_frame:
                            await send(
                                {
                                    "type": "http.response.body",
                                    "body": frame[: len(frame) // 2],
                                    "more_body": True,
                                }
                            )
                        raise _Drop
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                    await anyio.lowlevel.checkpoint()
                    pos += 1
                    sent += 1
                if self.ended:
                    await send({"type": "http.response.body", "body": b""})
                    return
                await self.changed.wait()
        finally:
            self.open -= 1


@dataclass
class Listing:
    """A paged list (``page``/``size`` from 1, ``offset``/``limit`` or ``cursor``),
    answered as ``wrap(items_of_the_page, page_info)``; ``between_pages`` runs after
    a page was served and before the next request (a listing that changes while
    it is paged)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    style: str = "page"
    wrap: Callable[[list[dict[str, Any]], dict[str, Any]], Any] = lambda items, info: {
        "items": items,
        **info,
    }
    between_pages: Callable[[int], None] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    served: int = 0

    async def handler(self, request: FakeRequest, send: Send, receive: Receive) -> None:
        q = request.query
        if self.style == "page":
            size = int(q.get("size") or q.get("perPage") or 50)
            page = int(q.get("page", "1"))
            start = (page - 1) * size
        elif self.style == "offset":
            size = int(q.get("limit", "50"))
            start = int(q.get("offset", "0"))
        elif self.style == "cursor":
            size = int(q.get("limit", "50"))
            start = int(q.get("cursor") or 0)
        else:  # a server that ignores paging: always the first items
            size, start = int(q.get("size") or 50), 0
        chunk = self.items[start : start + size]
        info: dict[str, Any] = {"total": len(self.items)}
        if self.style == "cursor":
            info["next_cursor"] = str(start + size) if start + size < len(self.items) else None
        self.served += 1
        await send_json(send, 200, self.wrap(chunk, info), self.headers)
        if self.between_pages is not None:
            self.between_pages(self.served)


@dataclass
class WsFeed:
    """Sends ``messages`` (JSON-encoded unless bytes/str), then closes with ``close``
    (``None``: keep the connection open until the client closes)."""

    messages: list[Any] = field(default_factory=list)
    close: int | None = 1000
    sessions: int = 0
    tokens: list[str | None] = field(default_factory=list)

    async def handler(self, request: FakeRequest, send: Send, receive: Receive) -> None:
        self.sessions += 1
        self.tokens.append(request.query.get("token"))
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        for message in self.messages:
            if isinstance(message, bytes | str):
                text = message if isinstance(message, str) else message.decode()
            else:
                text = orjson.dumps(message).decode()
            await send({"type": "websocket.send", "text": text})
        if self.close is not None:
            await send({"type": "websocket.close", "code": self.close})
            return
        while (await receive())["type"] != "websocket.disconnect":
            pass
