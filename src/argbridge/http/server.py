"""The embedded HTTP server: uvicorn (httptools, uvloop) inside the daemon's event loop.

Serves ``/healthz`` (liveness), ``/readyz`` (per-component readiness), ``/metrics``
(Prometheus) and whatever routes components add to :attr:`HttpServer.router`
(inbound webhooks, the control API; ``POST /webhooks/<unknown>`` is a 404 problem).
uvicorn runs through :mod:`argbridge.http.embed`: the runtime owns SIGTERM/SIGINT, and
graceful shutdown is bounded by ``http.shutdown_timeout``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import anyio

from argbridge.errors import ArgbridgeError
from argbridge.http import control, embed
from argbridge.http.asgi import Request, Response, Router, json_response, problem

if TYPE_CHECKING:
    from argbridge.runtime import App


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
        try:
            sock = embed.bind(cfg.host, cfg.port)
        except OSError as exc:
            raise ArgbridgeError(
                f"http: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}"
            ) from None
        self.port = sock.getsockname()[1]
        async with embed.embedded(
            self.router,
            sock,
            shutdown_timeout=cfg.shutdown_timeout,
            # No X-Forwarded-For rewriting: one less middleware on the hot path, and the
            # control API's loopback check sees the real peer address.
            proxy_headers=False,
        ):
            app.log.info("http.listening", host=cfg.host, port=self.port)
            self.started.set()
            await anyio.sleep_forever()
