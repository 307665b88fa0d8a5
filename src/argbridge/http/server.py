"""The embedded HTTP server: uvicorn (httptools, uvloop) inside the daemon's event loop.

Serves ``/healthz`` (liveness), ``/readyz`` (per-component readiness), ``/metrics``
(Prometheus) and whatever routes components add to :attr:`HttpServer.router`
(inbound webhooks, the control API; ``POST /webhooks/<unknown>`` is a 404 problem).
uvicorn's own signal handling is disabled: the runtime owns SIGTERM/SIGINT and stops the
server through ``should_exit``; graceful shutdown is bounded by ``http.shutdown_timeout``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Generator
from typing import TYPE_CHECKING

import anyio
import uvicorn

from argbridge.errors import ArgbridgeError
from argbridge.http import control
from argbridge.http.asgi import Request, Response, Router, json_response, problem

if TYPE_CHECKING:
    from argbridge.runtime import App


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The daemon owns signal handling; uvicorn must not replace our handlers.
        yield


class HttpServer:
    """The one listener of a daemon."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.config = app.settings.http
        self.router = Router()
        self.router.add("GET", "/healthz", self._healthz)
        self.router.add("GET", "/readyz", self._readyz)
        self.router.add("GET", "/metrics", self._metrics)
        # Configured webhook sources add literal ``/webhooks/<name>`` routes (which win);
        # anything else under /webhooks/ is an unknown source.
        self.router.add("POST", "/webhooks/{source_name}", self._unknown_webhook)
        control.register_all(app, self.router)
        self.port: int | None = None
        self.started = anyio.Event()
        self._server: _EmbeddedServer | None = None

    async def _healthz(self, request: Request) -> Response:
        return json_response({"status": "alive"})

    async def _unknown_webhook(self, request: Request) -> Response:
        return problem(404, "Unknown webhook source", "no webhook source is configured here")

    async def _readyz(self, request: Request) -> Response:
        health = self.app.health()
        ready = all(h.ready for h in health.values())
        body = {
            "status": "ready" if ready else "not ready",
            "components": {n: {"ready": h.ready, "detail": h.detail} for n, h in health.items()},
            "not_ready": sorted(n for n, h in health.items() if not h.ready),
        }
        return json_response(body, 200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        journal = self.app._journal
        if journal is not None and not journal.closed:
            with contextlib.suppress(ArgbridgeError):
                await self.app.metrics.refresh(journal)
        return Response(
            200, self.app.metrics.render(), content_type=b"text/plain; version=0.0.4; charset=utf-8"
        )

    async def serve(self, app: App) -> None:
        """Run until cancelled; then shut down gracefully within the configured bound."""
        cfg = self.config
        sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((cfg.host, cfg.port))
        except OSError as exc:
            sock.close()
            raise ArgbridgeError(
                f"http: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}"
            ) from None
        self.port = sock.getsockname()[1]
        uconfig = uvicorn.Config(
            self.router,
            lifespan="off",
            http="httptools",
            loop="none",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=max(1, round(cfg.shutdown_timeout)),
            server_header=False,
            # No X-Forwarded-For rewriting: one less middleware on the hot path, and the
            # control API's loopback check sees the real peer address.
            proxy_headers=False,
        )
        uconfig.load()
        server = _EmbeddedServer(uconfig)
        server.lifespan = uconfig.lifespan_class(uconfig)
        self._server = server
        await server.startup(sockets=[sock])
        app.log.info("http.listening", host=cfg.host, port=self.port)
        self.started.set()
        try:
            await server.main_loop()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(cfg.shutdown_timeout + 1):
                server.should_exit = True
                await server.shutdown(sockets=[sock])
            sock.close()
