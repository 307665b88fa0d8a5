"""Fakes of the Argus E2E, Argos CI and Argos Omni APIs (configurations of
:class:`tests.support.fake_streams.FakeUpstream`, shapes from ../shared/reference/)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_streams import (
    FakeRequest,
    FakeUpstream,
    Listing,
    Receive,
    Send,
    SSEStream,
    _Drop,
    send_json,
    sse_frame,
)

E2E_START = "/api/v1/tests/run"
E2E_STREAM = "/api/v1/stream/test"


@dataclass
class ArgusE2E:
    """``POST /api/v1/tests/run`` → 202 ``{run_id, thread_id, status}``; ``POST
    /api/v1/stream/test`` ``{"run_id"}`` → the run's SSE (one :class:`SSEStream` per run)."""

    fake: FakeUpstream
    runs: dict[str, SSEStream] = field(default_factory=dict)
    starts: list[dict[str, Any]] = field(default_factory=list)
    #: ``GET /api/v1/tests/{run_id}`` (Get Test Run Status) per run.
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The next start request is received, then the connection drops (no answer).
    drop_next_start: bool = False
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def install(self) -> ArgusE2E:
        self.fake.add("POST", E2E_START, self._start)
        self.fake.add("POST", E2E_STREAM, self._stream)
        return self

    def run(self, run_id: str) -> SSEStream:
        if run_id not in self.runs:
            self.runs[run_id] = SSEStream(resume=False)
            self.status[run_id] = {"run_id": run_id, "status": "pending"}

            async def status(request: FakeRequest, send: Send, receive: Receive) -> None:
                await send_json(send, 200, self.status[run_id])

            self.fake.add("GET", f"/api/v1/tests/{run_id}", status)
        return self.runs[run_id]

    async def _start(self, request: FakeRequest, send: Send, receive: Receive) -> None:
        self.starts.append(request.json())
        if self.drop_next_start:  # the run is created, the answer is lost on the way
            self.drop_next_start = False
            await send(
                {
                    "type": "http.response.start",
                    "status": 202,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"99")],
                }
            )
            await send({"type": "http.response.body", "body": b'{"run_id"', "more_body": True})
            raise _Drop
        run_id = f"run-{next(self._ids)}"
        self.run(run_id)
        body = {"run_id": run_id, "thread_id": "thread_abc", "status": "pending"}
        await send_json(send, 202, body | {"message": "Test run queued"})

    async def _stream(self, request: FakeRequest, send: Send, receive: Receive) -> None:
        run_id = (request.json() or {}).get("run_id")
        stream = self.runs.get(run_id) if isinstance(run_id, str) else None
        if stream is None:
            await send_json(send, 404, {"detail": "Test run not found"})
            return
        await stream.handler(request, send, receive)


def e2e_frames(*, screenshot: str = "iVBORw0KGgo", failed: int = 1) -> list[bytes]:
    return [
        sse_frame({"status": "running", "current_test": "login_test"}, event="state_update"),
        sse_frame({"level": "info", "message": "Navigating to login page"}, event="log"),
        sse_frame({"base64": screenshot, "step": 1}, event="screenshot"),
        sse_frame({"passed": 9, "failed": failed, "duration_seconds": 120}, event="complete"),
    ]


def argos_builds(listing: Listing) -> Listing:
    """``GET /v2/project/builds?page&perPage`` → ``{"pageInfo", "results"}``."""
    listing.wrap = lambda items, info: {
        "pageInfo": {"total": info["total"], "page": None},
        "results": items,
    }
    return listing


def build(n: int, status: str, conclusion: str | None = None) -> dict[str, Any]:
    return {
        "id": f"b{n}",
        "number": n,
        "name": "default",
        "status": status,
        "conclusion": conclusion,
        "url": f"https://app.argos-ci.com/acme/web/builds/{n}",
        "head": {"sha": f"{n:040x}", "branch": "main"},
        "createdAt": "2026-01-12T10:00:00Z",
    }


def omni_listing(listing: Listing) -> Listing:
    """Omni's ``{"success": true, "data": {...}}`` with page/size (50 per page)."""
    listing.wrap = lambda items, info: {
        "success": True,
        "data": {"items": items, "total": info["total"]},
    }
    return listing


def omni_error(status: int, code: str) -> bytes:
    import orjson

    return orjson.dumps({"error": {"code": code, "status": status, "message": code.lower()}})
