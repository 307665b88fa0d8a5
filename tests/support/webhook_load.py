"""A cheap signed-webhook load generator for benchmarks and soaks: pre-encoded HTTP/1.1
requests on keep-alive connections, sent at a fixed rate (an open loop with bounded
concurrency), so the sender costs little next to the daemon it measures."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from tests.support.webhooks import incident_body, sw_headers


def signed_request(port: int, n: int, *, source: str = "argus", pad: int = 300) -> bytes:
    """A signed Argus webhook request for a new incident ``INC-<n>``."""
    body = incident_body(f"INC-{n}", pad=pad)
    headers = sw_headers(body, msg_id=f"msg_load_{n}")
    head = [
        f"POST /webhooks/{source} HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def drive(
    port: int,
    request: Callable[[int], bytes],
    rate: float,
    *,
    count: int | None = None,
    until: float | None = None,
    connections: int = 32,
) -> tuple[int, int]:
    """Send ``request(i)`` for i = 0, 1, … at ``rate`` per second until ``count`` were
    sent or the monotonic time ``until``; returns (sent, answered 200)."""
    start = time.monotonic() + 0.05
    index = ok = 0

    def more() -> bool:
        if count is not None and index >= count:
            return False
        return until is None or time.monotonic() < until

    async def connection() -> None:
        nonlocal index, ok
        stream = await anyio.connect_tcp("127.0.0.1", port)
        buf = b""
        async with stream:
            while more():
                i = index
                index += 1
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await anyio.sleep(delay)
                await stream.send(request(i))
                while b"\r\n\r\n" not in buf:
                    buf += await stream.receive()
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"transfer-encoding":
                        # Not parsed here: framing it as a body of length 0 would read
                        # the chunks as the next answers.
                        raise ValueError(f"port {port} answered {value.strip()!r}")
                while len(buf) < length:
                    buf += await stream.receive()
                buf = buf[length:]
                ok += head.startswith(b"HTTP/1.1 200")

    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(connection)
    return index, ok
