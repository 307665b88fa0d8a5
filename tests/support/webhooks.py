"""Shared helpers of the inbound-webhook tests: a running daemon and signed requests."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
from standardwebhooks import Webhook

from argbridge.clock import Clock, SystemClock
from argbridge.config.settings import Settings
from argbridge.runtime import App
from tests.conftest import free_port, settings
from tests.support.ops import listening

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()


class ShiftedClock(SystemClock):
    """The real clock, with wall time moved by ``offset`` seconds (tests set it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


def webhook_settings(tmp_path: Path, sources: dict[str, Any] | None = None, **kw: Any) -> Settings:
    """Settings with an HTTP listener on a free loopback port and webhook sources."""
    if sources is None:
        sources = {"argus": {"type": "argus-webhook", "secrets": [SECRET]}}
    http = {"enabled": True, "host": "127.0.0.1", "port": free_port(), "shutdown_timeout": 2}
    http.update(kw.pop("http", {}))
    return settings(tmp_path, http=http, sources=sources, **kw)


@dataclass
class Running:
    app: App
    client: httpx.AsyncClient
    base: str

    async def post(
        self,
        source: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str | None = "application/json",
    ) -> httpx.Response:
        h = dict(headers or {})
        if content_type is not None:
            h["content-type"] = content_type
        return await self.client.post(f"{self.base}/webhooks/{source}", content=body, headers=h)


@asynccontextmanager
async def running_app(s: Settings, clock: Clock | None = None) -> AsyncIterator[Running]:
    """Run an :class:`App` in-process; yields once its HTTP listener is up."""
    app = App(s, clock=clock or SystemClock(), handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        with anyio.fail_after(10):
            await app.ready.wait()
            await listening(app)
        assert app.http is not None
        base = f"http://127.0.0.1:{app.http.port}"
        async with httpx.AsyncClient(timeout=10) as client:
            try:
                yield Running(app, client, base)
            finally:
                app.request_shutdown()
        with anyio.fail_after(10):
            await app.stopped.wait()


def incident_body(
    incident_id: str = "INC-1", action: str = "incident.created", pad: int = 0, **extra: Any
) -> bytes:
    incident: dict[str, Any] = {
        "id": incident_id,
        "title": "Checkout latency",
        "severity": "P1",
        "status": "open",
        "service_id": "svc-checkout",
        "team_id": "team-payments",
        "auto_classified": True,
        "classification_confidence": 0.92,
    }
    body: dict[str, Any] = {"event": action, "incident": incident, **extra}
    if pad:
        body["pad"] = "x" * pad
    return orjson.dumps(body)


def sw_headers(
    body: bytes,
    *,
    secret: str = SECRET,
    msg_id: str | None = None,
    ts: float | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers produced by the ``standardwebhooks`` package."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(int(time.time() if ts is None else ts), UTC)
    sig = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": sig,
    }


def problem_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body
