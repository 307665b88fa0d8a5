"""A fake Argus API on a free loopback port (real HTTP through uvicorn)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from argbridge.http import embed
from argbridge.http.asgi import Request, Response, Router, json_response, problem


@dataclass
class FakeArgus:
    base: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    entered: anyio.Event = field(default_factory=anyio.Event)
    released: anyio.Event = field(default_factory=anyio.Event)


@contextlib.asynccontextmanager
async def fake_argus(answer: Any, *, hang: bool = False) -> AsyncIterator[FakeArgus]:
    """Serves ``GET /api/v1/ai/similar-incidents/{id}`` with ``answer`` (``None`` → 500);
    with ``hang`` the handler waits until the test ends."""
    fake = FakeArgus()

    async def similar(request: Request) -> Response:
        fake.requests.append((request.path, request.header("authorization")))
        fake.entered.set()
        if hang:
            await fake.released.wait()
        if answer is None:
            return problem(500, "boom")
        return json_response(answer)

    router = Router()
    router.add("GET", "/api/v1/ai/similar-incidents/{id}", similar)
    sock = embed.bind()
    fake.base = f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1"
    async with embed.embedded(router, sock, shutdown_timeout=1):
        try:
            yield fake
        finally:
            fake.released.set()
