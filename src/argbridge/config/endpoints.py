"""The endpoints a configuration opens, as an operator reads them (pure, from settings).

``check-config`` prints them and the daemon logs them at start (``daemon.endpoints``),
so the webhook paths (``POST /webhooks/<source name>``) are not only in comments.
"""

from __future__ import annotations

from argbridge.config.settings import Settings

WEBHOOK_SOURCE_TYPES = ("argus-webhook", "webhook")


def listen_address(settings: Settings) -> str:
    """``http://HOST:PORT`` of the daemon's listener (port 0: a random port)."""
    http = settings.http
    host = f"[{http.host}]" if ":" in http.host else http.host
    port = str(http.port) if http.port else "<random port>"
    return f"http://{host}:{port}"


def endpoints(settings: Settings) -> list[str]:
    """One line per endpoint: ``METHOD URL  (what it is)``; empty without any listener."""
    if not settings.http.enabled:
        return control_endpoints(settings)
    base = listen_address(settings)
    lines = [
        f"POST {base}/webhooks/{name}  ({cfg.type} source {name!r})"
        for name, cfg in settings.sources.items()
        if cfg.type in WEBHOOK_SOURCE_TYPES
    ]
    lines += [
        f"GET  {base}/healthz  (liveness)",
        f"GET  {base}/readyz  (readiness)",
    ]
    if settings.metrics.listener == "http":
        lines.append(f"GET  {base}/metrics  (Prometheus, on the public listener)")
    return lines + control_endpoints(settings)


def control_endpoints(settings: Settings) -> list[str]:
    """Where the control API and ``/metrics`` listen (never on the public listener unless
    ``metrics.listener = "http"``)."""
    lines: list[str] = []
    ctl = settings.control
    if ctl.enabled:
        lines.append(f"     unix:{ctl.socket_path(settings.state_dir)} /control/...  (control API)")
        if ctl.port is not None:
            access = "bearer token" if ctl.token is not None else "loopback, unrelayed only"
            port = str(ctl.port) if ctl.port else "<random port>"
            lines.append(f"     http://{ctl.host}:{port}/control/...  (control API: {access})")
    m = settings.metrics
    if m.listener == "own":
        port = str(m.port) if m.port else "<random port>"
        lines.append(f"GET  http://{m.host}:{port}/metrics  (Prometheus)")
    elif m.listener == "control" and ctl.enabled:
        lines.append("GET  /metrics on the control listener  (Prometheus)")
    return lines
