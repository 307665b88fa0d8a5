"""An in-process Arga API simulator: real HTTP, SSE and WebSocket on loopback.

Owns: a scriptable stand-in for the parts of ``api.argalabs.com`` argbridge reads
(``../shared/reference/arga-api.txt``), served by uvicorn on ``127.0.0.1:<free port>``:

- ``GET /validate/{run_id}/results`` (SSE; ``Last-Event-ID`` resumes; a terminal run
  answers with its single ``run_<status>`` event), ``GET /runs/{run_id}``
  (``results_json``), ``GET /validation/runs``;
- ``GET /demo-runner/runs``, ``GET /demo-runner/runs/{id}`` (``events_json``) and
  ``WS /demo-runner/runs/{id}/stream?token=`` (``event``/``done`` messages; live only,
  history comes from ``events_json``; a bad token is accepted then closed with 1008
  "unauthorized", an unknown run with 1008 "Test run not found");
- ``POST /validate/url-run`` (JSON with a prompt, else an SSE planning stream with
  ``X-Run-Id``) and ``POST /validate/pr-run`` (SSE planning stream).

:class:`Faults` scripts misbehaviour: drop every N events (abruptly, optionally after
half a frame), ignore ``Last-Event-ID``, queued statuses (401/403/404/429 +
``Retry-After``/500…), a wrong content type, a leading BOM, heartbeat-only periods,
``retry:``, WebSocket close 1008 after accept or abnormal closes. Runs are driven by the
test (:meth:`ValidationRun.publish`) or by :meth:`ArgaSimulator.autoplay` (``make run``).
It is used by the tests, the benchmark and the ``simulate`` option of the arga source.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import anyio
import anyio.abc
import anyio.lowlevel
import orjson

from argbridge.http import embed
from argbridge.simulator.arga_runs import (
    TERMINAL,
    DemoRun,
    Faults,
    ValidationRun,
    demo_script,
    validation_script,
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


__all__ = [
    "TERMINAL",
    "ArgaSimulator",
    "DemoRun",
    "Faults",
    "ValidationRun",
    "demo_script",
    "validation_script",
]


@dataclass
class Attempt:
    """One stream connection the simulator served (the attempt log): which run, which
    client (its ``x-argbridge-instance`` header), when it opened and closed (monotonic),
    and how many connections to the same run were open when it opened (itself included)."""

    run_id: str
    kind: str
    client: str
    opened: float
    closed: float | None = None
    concurrent: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "client": self.client,
            "opened": self.opened,
            "closed": self.closed,
            "concurrent": self.concurrent,
        }


class _Drop(Exception):
    """Raised inside a response to cut the connection without a clean end."""


class ArgaSimulator:
    """The simulator; use ``async with ArgaSimulator(token).running() as sim:``."""

    def __init__(self, token: str = "sim-token", *, heartbeat: float = 15.0) -> None:
        self.token = token
        self.heartbeat = heartbeat
        self.faults = Faults()
        self.validation_runs: dict[str, ValidationRun] = {}
        self.demo_runs: dict[str, DemoRun] = {}
        self.port = 0
        #: Requests per path kind, and the ``Last-Event-ID`` of each stream request.
        self.requests: dict[str, int] = {}
        self.last_event_ids: list[str | None] = []
        self.ws_connections = 0
        #: Bytes of SSE/WS payload handed to the transport (flow control applies).
        self.bytes_sent = 0
        self.open_streams = 0
        self.streams_opened = 0
        #: When the pending transport write started (``None``: no write pending).
        self.send_started: float | None = None
        self.max_open_streams = 0
        self.started_runs: list[str] = []
        #: Every stream connection served (see :class:`Attempt`).
        self.attempts: list[Attempt] = []
        self._activity = anyio.Event()
        self._counter = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting -----------------------------------------------------------------------

    def add_validation_run(
        self,
        run_id: str | None = None,
        *,
        steps: int = 3,
        pad: int = 0,
        final: str = "complete",
        published: int = 0,
    ) -> ValidationRun:
        run_id = run_id or str(uuid.uuid4())
        run = ValidationRun(run_id, validation_script(run_id, steps, pad=pad, final=final))
        self.validation_runs[run_id] = run
        if published:
            run.publish(published)
        return run

    def add_demo_run(
        self, run_id: str | None = None, *, steps: int = 3, final: str = "completed", pad: int = 0
    ) -> DemoRun:
        run_id = run_id or str(uuid.uuid4())
        run = DemoRun(run_id, demo_script(run_id, steps, pad=pad), final_status=final)
        self.demo_runs[run_id] = run
        return run

    async def autoplay(self, tick: float, steps: int = 4, loop: bool = True) -> None:
        """Produce runs forever (``make run``): one validation run and one demo run at a
        time, one event per ``tick``."""
        while True:
            n = next(self._counter)
            vrun = self.add_validation_run(f"sim-run-{n:04d}", steps=steps)
            drun = self.add_demo_run(f"sim-demo-{n:04d}", steps=steps + 1)
            while not (vrun.terminal and drun.terminal):
                await anyio.sleep(tick)
                if not vrun.terminal:
                    vrun.publish(1)
                if not drun.terminal:
                    drun.publish(1)
                self._advance_started()
            if not loop:
                return
            for _ in range(10):
                await anyio.sleep(tick)
                self._advance_started()

    def _advance_started(self) -> None:
        """Runs started with ``POST /validate/…`` progress with the autoplay clock."""
        for run_id in self.started_runs:
            run = self.validation_runs[run_id]
            if not run.terminal:
                run.publish(1)

    def touch(self) -> None:
        """Wake :meth:`wait_until` waiters (a test scripted the runs, e.g. published)."""
        self._bump()

    def _bump(self) -> None:
        self._activity.set()
        self._activity = anyio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait (no polling) until ``predicate()`` holds after some server activity."""
        while not predicate():
            await self._activity.wait()

    async def wait_stalled(self, seconds: float = 0.5, poll: float = 0.05) -> None:
        """Wait until a stream write has been blocked by flow control for ``seconds``
        (the client stopped reading and the socket buffers are full)."""
        while True:
            started = self.send_started
            if started is not None and anyio.current_time() - started >= seconds:
                return
            await anyio.sleep(poll)

    # -- serving -------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ArgaSimulator]:
        async with anyio.create_task_group() as tg:
            await tg.start(self.serve)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        sock = embed.bind("127.0.0.1", self.port)
        self.port = sock.getsockname()[1]
        async with embed.embedded(
            self,
            sock,
            shutdown_timeout=1,
            # SSE streams never end by themselves: do not wait for them on shutdown.
            force_exit=True,
            ws="websockets-sansio",
            log_level="critical",
            server_header=True,
            ws_ping_interval=None,
        ):
            task_status.started()
            await anyio.sleep_forever()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._http(scope, receive, send)
        except _Drop:
            raise
        except Exception:  # pragma: no cover - a simulator bug; surface it as a 500
            await _json(send, 500, {"detail": "simulator error"})

    def _count(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1
        self._bump()

    def _opened(self) -> None:
        self.open_streams += 1
        self.streams_opened += 1
        self.max_open_streams = max(self.max_open_streams, self.open_streams)
        self._bump()

    def _attempt(self, run_id: str, kind: str, scope: Scope) -> Attempt:
        client = ""
        for k, v in scope["headers"]:
            if k == b"x-argbridge-instance":
                client = v.decode("latin-1")
        concurrent = 1 + sum(
            1 for a in self.attempts if a.run_id == run_id and a.kind == kind and a.closed is None
        )
        attempt = Attempt(run_id, kind, client, time.monotonic(), concurrent=concurrent)
        self.attempts.append(attempt)
        return attempt

    def _authorized(self, scope: Scope) -> bool:
        for k, v in scope["headers"]:
            if k == b"authorization":
                return bool(v.decode("latin-1") == f"Bearer {self.token}")
        return False

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        parts = scope["path"].strip("/").split("/")
        if parts == ["health"]:
            await _json(send, 200, {"status": "ok", "version": "sim"})
            return
        if not self._authorized(scope):
            await _json(send, 401, {"detail": "Invalid or expired token."})
            return
        if method == "GET" and len(parts) == 3 and parts[0] == "validate" and parts[2] == "results":
            self._count("results")
            await self._results(scope, receive, send, parts[1])
        elif method == "GET" and len(parts) == 2 and parts[0] == "runs":
            self._count("run")
            run = self.validation_runs.get(parts[1])
            if run is None:
                await _json(send, 404, {"detail": "Validation run not found"})
            else:
                await _json(send, 200, run.details())
        elif method == "GET" and parts == ["validation", "runs"]:
            self._count("list")
            items = [
                {"run_id": r.run_id, "status": r.status, "repo": r.repo, "trigger_type": "pr_run"}
                for r in reversed(self.validation_runs.values())
            ]
            await _json(send, 200, {"items": items, "total": len(items), "has_more": False})
        elif method == "GET" and parts == ["demo-runner", "runs"]:
            self._count("demo_list")
            runs = [r.details() | {"events_json": []} for r in reversed(self.demo_runs.values())]
            await _json(send, 200, {"runs": runs[:25]})
        elif method == "GET" and len(parts) == 3 and parts[:2] == ["demo-runner", "runs"]:
            self._count("demo_run")
            drun = self.demo_runs.get(parts[2])
            if drun is None:
                await _json(send, 404, {"detail": "Test run not found"})
            else:
                details = drun.details()
                if self.faults.hide_history:
                    details["events_json"] = []
                    details["status"] = "running"
                await _json(send, 200, details)
        elif method == "POST" and parts in (["validate", "url-run"], ["validate", "pr-run"]):
            self._count(parts[1])
            await self._start(scope, receive, send, parts[1])
        else:
            await _json(send, 404, {"detail": "Not Found"})

    async def _start(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        try:
            req = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            await _json(send, 400, {"detail": "invalid JSON"})
            return
        if kind == "url-run" and not str(req.get("url", "")).startswith(("http://", "https://")):
            await _json(send, 400, {"detail": "A valid public http(s) URL is required."})
            return
        if kind == "pr-run" and not (req.get("branch") or req.get("pr_url")):
            await _json(send, 400, {"detail": "A branch or PR URL is required."})
            return
        run = self.add_validation_run(steps=2)
        self.started_runs.append(run.run_id)
        session = str(uuid.uuid4())
        if kind == "url-run" and req.get("prompt"):
            await _json(
                send, 200, {"run_id": run.run_id, "status": "queued", "session_id": session}
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"x-run-id", run.run_id.encode()),
                    (b"x-session-id", session.encode()),
                ],
            }
        )
        planning = [
            {"type": "planning", "message": "Generating the test plan"},
            {"type": "plan_ready", "message": "Plan ready", "steps": 2},
        ]
        for event in planning:
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(event) + b"\n\n",
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b""})

    async def _results(self, scope: Scope, receive: Receive, send: Send, run_id: str) -> None:
        f = self.faults
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.last_event_ids.append(headers.get("last-event-id"))
        if f.gate is not None and self.requests.get("results", 0) > f.gate_after:
            await f.gate.wait()
        if f.statuses:
            status = f.statuses.pop(0)
            extra = {"retry-after": f.retry_after} if f.retry_after else {}
            await _json(send, status, {"detail": f"scripted {status}"}, extra)
            return
        run = self.validation_runs.get(run_id)
        if run is None:
            await _json(send, 404, {"detail": "Validation run not found"})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", f.content_type.encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        self._opened()
        attempt = self._attempt(run_id, "results", scope)
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                await self._stream_events(send, run, headers.get("last-event-id"))
                tg.cancel_scope.cancel()
        finally:
            attempt.closed = time.monotonic()
            self.open_streams -= 1
            self._bump()

    async def _stream_events(self, send: Send, run: ValidationRun, last_id: str | None) -> None:
        f = self.faults

        async def write(data: bytes) -> None:
            self.bytes_sent += len(data)
            self.send_started = anyio.current_time()
            await send({"type": "http.response.body", "body": data, "more_body": True})
            self.send_started = None

        prefix = b"\xef\xbb\xbf" if f.bom else b""
        if f.retry_ms is not None:
            prefix += b"retry: %d\n\n" % f.retry_ms
        if prefix:
            await write(prefix)
        for _ in range(f.heartbeats_first):
            await write(b": ping\n\n")
        if f.bad_json_first:
            await write(b"data: {not json\n\n")
        if run.terminal and run.published == len(run.events) and not f.replay_history:
            # The documented behaviour: a terminal run answers with its terminal event.
            await write(_frame(len(run.events), run.events[-1]))
            await send({"type": "http.response.body", "body": b""})
            return
        pos = 0
        if last_id and last_id.isdigit() and not f.ignore_last_event_id:
            pos = int(last_id)
        sent = 0
        if run.flood_pad:
            filler = {"type": "progress", "pad": "x" * run.flood_pad}
            for n in itertools.count(pos + 1):
                await write(_frame(n, filler))
                # uvicorn's send returns at once after a disconnect: let the watcher run.
                await anyio.lowlevel.checkpoint()
        while True:
            if f.coalesce > 1 and not (f.drop_every or f.eof_every):
                while run.published - pos > 1:
                    end = min(run.published, pos + f.coalesce)
                    await write(b"".join(_frame(n + 1, run.events[n]) for n in range(pos, end)))
                    pos = end
            while pos < run.published:
                frame = _frame(pos + 1, run.events[pos])
                if f.drop_every and sent >= f.drop_every:
                    if f.half_written:
                        await write(frame[: len(frame) // 2])
                    raise _Drop
                if f.eof_every and sent >= f.eof_every:
                    await send({"type": "http.response.body", "body": b""})
                    return
                await write(frame)
                pos += 1
                sent += 1
            if run.terminal:
                await send({"type": "http.response.body", "body": b""})
                return
            changed = run.changed
            with anyio.move_on_after(self.heartbeat):
                await changed.wait()
            if not changed.is_set():
                await write(b": ping\n\n")
                self._bump()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        f = self.faults
        parts = scope["path"].strip("/").split("/")
        await receive()  # websocket.connect
        self.ws_connections += 1
        self._count("ws")
        if f.statuses:
            status = f.statuses.pop(0)
            headers = [(b"content-type", b"application/json")]
            if f.retry_after:
                headers.append((b"retry-after", f.retry_after.encode()))
            await send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await send({"type": "websocket.http.response.body", "body": b"{}"})
            return
        token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        run = self.demo_runs.get(parts[2]) if len(parts) == 4 and parts[3] == "stream" else None
        await send({"type": "websocket.accept"})
        if f.ws_close_1008 or token != self.token:
            reason = f.ws_close_1008_reason if f.ws_close_1008 else "unauthorized"
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        if run is None:  # what Arga says for a run it does not know (issue 11)
            await send({"type": "websocket.close", "code": 1008, "reason": "Test run not found"})
            return
        self._opened()
        attempt = self._attempt(run.run_id, "ws", scope)
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "websocket.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                await self._ws_events(send, run)
                tg.cancel_scope.cancel()
        finally:
            attempt.closed = time.monotonic()
            self.open_streams -= 1
            self._bump()

    async def _ws_events(self, send: Send, run: DemoRun) -> None:
        f = self.faults

        async def write(obj: dict[str, Any]) -> None:
            data = orjson.dumps(obj).decode()
            self.bytes_sent += len(data)
            await send({"type": "websocket.send", "text": data})

        if f.bad_json_first:
            await send({"type": "websocket.send", "text": "{not json"})
        pos = 0 if f.replay_history else run.published  # live only: history is in events_json
        sent = 0
        if run.flood_pad:
            for n in itertools.count():
                event = {
                    "id": f"{run.run_id}-f{n}",
                    "type": "progress",
                    "message": "x" * run.flood_pad,
                }
                self.send_started = anyio.current_time()
                await write({"type": "event", "event": event})
                self.send_started = None
                await anyio.lowlevel.checkpoint()
        while True:
            while pos < run.published:
                if f.drop_every and sent >= f.drop_every:
                    await send(
                        {"type": "websocket.close", "code": f.ws_drop_code, "reason": "drop"}
                    )
                    return
                await write({"type": "event", "event": run.events[pos]})
                pos += 1
                sent += 1
            if run.terminal:
                done: dict[str, Any] = {"type": "done", "status": run.status}
                if run.status == "failed":
                    done["message"] = "Flow runner failed: simulated"
                await write(done)
                await send({"type": "websocket.close", "code": 1000})
                return
            await run.changed.wait()


def _frame(n: int, event: dict[str, Any]) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (n, orjson.dumps(event))


async def _json(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    raw = orjson.dumps(body)
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})
