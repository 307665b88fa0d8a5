"""The one uvicorn embedding: no signal capture, bounded shutdown."""

from __future__ import annotations

import signal
from typing import Any

import anyio
import httpx

from argbridge.http import embed


async def endless(scope: Any, receive: Any, send: Any) -> None:
    """Starts a streamed response and never finishes it (like an SSE stream)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await anyio.sleep_forever()


async def test_serving_leaves_the_process_signal_handlers_alone():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    async with embed.serve(endless) as url:
        during = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", url + "/") as response:
                assert response.status_code == 200
    assert during == before
    assert {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} == before


async def test_shutdown_is_bounded_with_a_response_that_never_ends():
    got_first_chunk = anyio.Event()
    outcome: list[str] = []

    async def reader(url: str) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            try:
                async with client.stream("GET", url + "/") as response:
                    async for _ in response.aiter_bytes():
                        got_first_chunk.set()
                outcome.append("ended")
            except httpx.RemoteProtocolError:
                outcome.append("cut off")

    sock = embed.bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with anyio.create_task_group() as tg:
        async with embed.embedded(endless, sock, shutdown_timeout=1):
            tg.start_soon(reader, url)
            with anyio.fail_after(5):
                await got_first_chunk.wait()
            started = anyio.current_time()
        # graceful for shutdown_timeout (1 s), then open connections are aborted
        assert anyio.current_time() - started < 4
    assert outcome == ["cut off"]
