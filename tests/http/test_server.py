"""The embedded HTTP server inside a running daemon (real loopback connections)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import httpx

from argbridge.http.asgi import Request, Response
from tests.support.webhooks import running_app, webhook_settings


async def test_health_ready_and_404_on_the_webhook_listener(tmp_path: Path):
    async with running_app(webhook_settings(tmp_path)) as r:
        assert (await r.client.get(f"{r.base}/healthz")).json() == {"status": "alive"}
        ready = await r.client.get(f"{r.base}/readyz")
        assert ready.status_code == 200
        assert ready.json()["components"]["source:argus"]["ready"] is True
        missing = await r.client.get(f"{r.base}/nope")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        # The control plane and /metrics are not served here (see test_planes.py).
        for path in ("/metrics", "/control/status", "/control/tail"):
            assert (await r.client.get(f"{r.base}{path}")).status_code == 404


async def test_server_does_not_take_over_signal_handlers(tmp_path: Path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    async with running_app(webhook_settings(tmp_path)) as r:
        assert (await r.client.get(f"{r.base}/healthz")).status_code == 200
        assert {s: signal.getsignal(s) for s in before} == before
    assert {s: signal.getsignal(s) for s in before} == before


async def test_graceful_shutdown_is_bounded_with_a_hanging_request(tmp_path: Path):
    entered = anyio.Event()

    async def hang(request: Request) -> Response:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError

    s = webhook_settings(tmp_path, http={"shutdown_timeout": 1})
    outcome: list[BaseException | int] = []
    async with running_app(s) as r:
        assert r.app.http is not None
        r.app.http.router.add("GET", "/hang", hang)

        async def client() -> None:
            try:
                outcome.append((await r.client.get(f"{r.base}/hang")).status_code)
            except httpx.HTTPError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client)
            with anyio.fail_after(5):
                await entered.wait()
            started = time.monotonic()
            r.app.request_shutdown()
            with anyio.fail_after(8):
                await r.app.stopped.wait()
            elapsed = time.monotonic() - started
    # uvicorn waited for the request up to the bound, then gave up on it.
    assert elapsed < 4
    assert len(outcome) == 1
