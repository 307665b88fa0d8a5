"""The daemon's HTTP planes, each on its own listener (:class:`Planes`).

- **webhook** (``[http]``, the public one a reverse proxy forwards to): inbound
  ``POST /webhooks/<source>`` (routes added by the webhook sources; an unknown source is
  a 404 problem), ``GET /healthz`` (liveness) and ``GET /readyz`` (per-component
  readiness). Nothing else: ``/control/*`` and ``/metrics`` answer 404 here.
- **control** (``[control]``): the control API (:mod:`argbridge.http.control`) on the
  state dir's Unix socket (mode 0600) and, with ``control.port``, on TCP too; each
  guarded by :class:`~argbridge.http.control.ControlAccess`.
- **metrics** (``[metrics]``): ``GET /metrics`` (Prometheus) on the control listener by
  default, on a listener of its own (``listener = "own"``), on the webhook listener only
  with ``listener = "http"``, or nowhere (``"off"``).

Every listener is bound by :meth:`Planes.bind` before the daemon starts anything else
(fail fast, one line naming the address), then served by the runtime as a supervised
service. uvicorn runs through :mod:`argbridge.http.embed`: the runtime owns SIGTERM and
SIGINT, and graceful shutdown is bounded by ``http.shutdown_timeout``.
"""

from __future__ import annotations

import contextlib

from argbridge.config.settings import Settings
from argbridge.errors import ArgbridgeError, StartupError
from argbridge.http import control
from argbridge.http.asgi import Request, Response, Router, json_response, problem
from argbridge.http.facade import ControlFacade, HealthView, open_journal
from argbridge.http.listener import Address, Listener


def add_health_routes(router: Router, daemon: HealthView) -> None:
    """``GET /healthz`` (alive) and ``GET /readyz`` (503 naming what is not ready)."""

    async def healthz(request: Request) -> Response:
        return json_response({"status": "alive"})

    async def readyz(request: Request) -> Response:
        health = daemon.health()
        ready = all(h.ready for h in health.values())
        body = {
            "status": "ready" if ready else "not ready",
            "components": {n: {"ready": h.ready, "detail": h.detail} for n, h in health.items()},
            "not_ready": sorted(n for n, h in health.items() if not h.ready),
        }
        return json_response(body, 200 if ready else 503)

    router.add("GET", "/healthz", healthz)
    router.add("GET", "/readyz", readyz)


def add_metrics_route(router: Router, daemon: ControlFacade) -> None:
    """``GET /metrics``: the Prometheus text format, journal gauges refreshed first."""

    async def metrics(request: Request) -> Response:
        journal = open_journal(daemon)
        if journal is not None:
            with contextlib.suppress(ArgbridgeError):
                await daemon.metrics.refresh(journal)
        return Response(
            200,
            daemon.metrics.render(),
            content_type=b"text/plain; version=0.0.4; charset=utf-8",
        )

    router.add("GET", "/metrics", metrics)


def webhook_router(daemon: HealthView) -> Router:
    """The public plane's routes (webhook sources add ``/webhooks/<name>`` to it)."""
    router = Router()
    add_health_routes(router, daemon)

    async def unknown_webhook(request: Request) -> Response:
        return problem(404, "Unknown webhook source", "no webhook source is configured here")

    # Configured webhook sources add literal ``/webhooks/<name>`` routes (which win).
    router.add("POST", "/webhooks/{source_name}", unknown_webhook)
    return router


class Planes:
    """Every listener of one daemon, built from its settings (nothing bound yet)."""

    def __init__(self, daemon: ControlFacade, settings: Settings) -> None:
        timeout = settings.http.shutdown_timeout
        metrics_on = settings.metrics.listener
        #: The public webhook listener (``None`` with ``http.enabled = false``).
        self.webhook: Listener | None = None
        #: The control API on the Unix socket, and on TCP with ``control.port``.
        self.control: Listener | None = None
        self.control_tcp: Listener | None = None
        #: ``/metrics`` on its own address (``metrics.listener = "own"``).
        self.metrics: Listener | None = None
        http = settings.http
        if http.enabled:
            router = webhook_router(daemon)
            if metrics_on == "http":
                add_metrics_route(router, daemon)
            self.webhook = Listener(
                "http",
                Address("http.host/http.port", http.host, http.port),
                router,
                shutdown_timeout=timeout,
            )
        ctl = settings.control
        if ctl.enabled:
            router = Router()
            control.register_all(daemon, router)
            if metrics_on == "control":
                add_metrics_route(router, daemon)
            path = ctl.socket_path(settings.state_dir)
            self.control = Listener(
                "control",
                Address("state_dir, control.socket", path=path),
                router,
                app=control.GuardedRouter(router, control.ControlAccess("unix", None)),
                shutdown_timeout=timeout,
            )
            if ctl.port is not None:
                self.control_tcp = Listener(
                    "control-tcp",
                    Address("control.host/control.port", ctl.host, ctl.port),
                    router,
                    app=control.GuardedRouter(router, control.ControlAccess("tcp", ctl.token)),
                    shutdown_timeout=timeout,
                )
        if metrics_on == "own":
            router = Router()
            add_metrics_route(router, daemon)
            m = settings.metrics
            self.metrics = Listener(
                "metrics",
                Address("metrics.host/metrics.port", m.host, m.port),
                router,
                shutdown_timeout=timeout,
            )

    def listeners(self) -> list[Listener]:
        found = (self.webhook, self.control, self.control_tcp, self.metrics)
        return [listener for listener in found if listener is not None]

    def bind(self) -> None:
        """Bind every listener now; on the first failure release the others and raise
        :class:`StartupError` (one line naming the address and its config key)."""
        try:
            for listener in self.listeners():
                listener.bind()
        except StartupError:
            self.close()
            raise

    def close(self) -> None:
        """Release what was bound but not served."""
        for listener in self.listeners():
            listener.close()
