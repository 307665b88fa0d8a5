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
    """One line per endpoint: ``METHOD URL  (what it is)``; empty without a listener."""
    if not settings.http.enabled:
        return []
    base = listen_address(settings)
    lines = [
        f"POST {base}/webhooks/{name}  ({cfg.type} source {name!r})"
        for name, cfg in settings.sources.items()
        if cfg.type in WEBHOOK_SOURCE_TYPES
    ]
    lines += [
        f"GET  {base}/healthz  (liveness)",
        f"GET  {base}/readyz  (readiness)",
        f"GET  {base}/metrics  (Prometheus)",
    ]
    access = "bearer token" if settings.http.control_token is not None else "loopback clients only"
    lines.append(f"     {base}/control/...  (control API: {access})")
    return lines
