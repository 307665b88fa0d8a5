"""A small embedded HTTP server for the demo's local destinations (receiver, Slack).

Serves an :class:`argbridge.http.asgi.Router` with uvicorn on a free 127.0.0.1 port
inside the current event loop; uvicorn's signal handling is off (the demo owns signals).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Generator

import anyio
import uvicorn

from argbridge.http.asgi import Router


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serve(router: Router, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``router`` on a free loopback port; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        router,
        lifespan="off",
        http="httptools",
        loop="none",
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    config.load()
    server = _Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.main_loop)
            try:
                yield f"http://{host}:{port}"
            finally:
                server.should_exit = True
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await server.shutdown(sockets=[sock])
        sock.close()
