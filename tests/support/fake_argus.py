"""A fake Argus API on a free loopback port (real HTTP through uvicorn)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn

from argbridge.http.asgi import Request, Response, Router, json_response, problem


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


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
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        router,
        lifespan="off",
        loop="none",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    config.load()
    server = _QuietServer(config)
    server.lifespan = config.lifespan_class(config)
    fake.base = f"http://127.0.0.1:{port}/api/v1"
    await server.startup(sockets=[sock])
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.main_loop)
            try:
                yield fake
            finally:
                fake.released.set()
                server.should_exit = True
    finally:
        with anyio.fail_after(5):
            await server.shutdown(sockets=[sock])
        sock.close()
