"""The floor of issue 17 item 6: the least a Python process on this stack does for a
signed webhook that must be durable before its answer and then reach Kafka.

Run by ``bench_bounds --phase cpu --floor`` as a subprocess, at the same rates and with
the same load as the daemon, so that its CPU per event is measured in the same run:
``python -m bench.floor_webhook --port P --bootstrap HOST:PORT --topic T --state DIR``.

Per request, and nothing else:

- uvicorn (uvloop, httptools) hands a bare ASGI callable the ``POST``; the body is read;
- the Standard Webhooks signature is checked (``hmac`` SHA-256, constant-time compare,
  the timestamp window) with the secret of ``tests.support.webhooks``;
- the body is written to LevelDB (plyvel) under an ascending key in a synced write batch
  by one writer thread that takes everything queued after a linger of ``--linger`` (20
  ms, the daemon's default ``journal.group_linger``): a group commit, as the journal's;
  the request is answered 200 once its batch is on disk;
- the body is handed to an aiokafka producer (``acks=all``, idempotent, ``linger_ms`` 10
  or ``--kafka-linger-ms``, as the daemon's sink's default ``read_linger``) without
  waiting in the request for the ack.

Not done, unlike the daemon: no normalising into a CloudEvent, no dedupe lookup, no
routing, no sink cursor, no retries or dead letters, no metrics or logs, no backpressure.
So the daemon's CPU can only be above this floor; a target below it is out of reach
for any Python daemon built on these libraries. ``--raw`` serves the same work from a
bare asyncio protocol with httptools' parser instead of uvicorn; ``--skip journal`` or
``--skip kafka`` leaves a stage out, to see what each costs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any, cast

import httptools
import plyvel
import uvicorn
import uvloop
from aiokafka import AIOKafkaProducer

TOLERANCE = 300


class GroupWriter:
    """One thread writing everything queued as one synced LevelDB batch."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop, linger: float) -> None:
        self.linger = linger
        self.db = plyvel.DB(str(path), create_if_missing=True)
        self.loop = loop
        self.queue: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self.seq = 0
        self.thread = threading.Thread(target=self._run, name="floor-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            items = [item]
            if self.linger:
                time.sleep(self.linger)
            while True:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.queue.put(None)
                    break
                items.append(more)
            with self.db.write_batch(sync=True) as wb:
                for body, _ in items:
                    self.seq += 1
                    wb.put(self.seq.to_bytes(8, "big"), body)
            self.loop.call_soon_threadsafe(_resolve, [fut for _, fut in items])

    async def write(self, body: bytes) -> None:
        fut = self.loop.create_future()
        self.queue.put((body, fut))
        await fut


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(None)


def verify(secret: bytes, headers: dict[bytes, bytes], body: bytes) -> bool:
    msg_id = headers.get(b"webhook-id", b"")
    ts = headers.get(b"webhook-timestamp", b"")
    if not ts.isdigit() or abs(time.time() - int(ts)) > TOLERANCE:
        return False
    mac = hmac.new(secret, msg_id + b"." + ts + b"." + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac)
    for sig in headers.get(b"webhook-signature", b"").split():
        version, _, value = sig.partition(b",")
        if version == b"v1" and hmac.compare_digest(value, expected):
            return True
    return False


class FloorApp:
    def __init__(
        self,
        secret: bytes,
        state: Path,
        bootstrap: str,
        topic: str,
        *,
        linger: float,
        kafka_linger_ms: int,
        skip: set[str],
    ) -> None:
        self.linger, self.kafka_linger_ms, self.skip = linger, kafka_linger_ms, skip
        self.secret, self.state, self.bootstrap, self.topic = secret, state, bootstrap, topic
        self.writer: GroupWriter | None = None
        self.producer: AIOKafkaProducer | None = None
        self.acked = 0

    async def start(self) -> None:
        self.writer = GroupWriter(self.state, asyncio.get_running_loop(), self.linger)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.kafka_linger_ms,
        )
        await self.producer.start()

    def _acked(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.acked += 1

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.producer is not None:
                        await self.producer.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, answer = await self.handle(scope["path"], dict(scope["headers"]), body)
        await _answer(send, status, answer)

    async def handle(
        self, path: str, headers: dict[bytes, bytes], body: bytes
    ) -> tuple[int, bytes]:
        """The one route of either front-end: ``GET /acked`` (Kafka acks so far), else a
        signed webhook; the answer's status and body."""
        if path == "/acked":
            return 200, str(self.acked).encode()
        if not verify(self.secret, headers, body):
            return 401, b'{"title":"bad signature"}'
        await self.accept(body)
        return 200, b'{"status":"accepted"}'

    async def accept(self, body: bytes) -> None:
        """The durable write, then the hand-off to Kafka (either skipped with --skip)."""
        assert self.writer is not None and self.producer is not None
        if "journal" not in self.skip:
            await self.writer.write(body)
        if "kafka" in self.skip:
            self.acked += 1
            return
        fut = await self.producer.send(self.topic, body, key=body[:16])
        fut.add_done_callback(self._acked)


class RawProtocol(asyncio.Protocol):
    """``--raw``: the same work on a bare asyncio protocol with httptools' parser (no
    uvicorn, no ASGI), one request at a time per connection (the load is keep-alive and
    waits for each answer)."""

    def __init__(self, app: FloorApp) -> None:
        self.app = app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: dict[bytes, bytes] = {}
        self.url = b""
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        url, headers, body = self.url, self.headers, self.body
        self.url, self.headers, self.body = b"", {}, b""
        asyncio.get_running_loop().create_task(self.handle(url, headers, body))

    async def handle(self, url: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        self.answer(*await self.app.handle(url.decode(), headers, body))

    def answer(self, status: int, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )


async def serve_raw(app: FloorApp, port: int) -> None:
    await app.start()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RawProtocol(app), "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    assert app.producer is not None
    await app.producer.stop()


async def _answer(send: Any, status: int, body: bytes) -> None:
    """The ASGI answer, with its length (without one, uvicorn sends it chunked, which
    the load driver of tests/support/webhook_load.py does not parse)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    from tests.support.webhooks import SECRET

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--linger", type=float, default=0.020, help="group commit linger, s")
    parser.add_argument("--kafka-linger-ms", type=int, default=10, help="aiokafka's linger_ms")
    parser.add_argument("--raw", action="store_true", help="no uvicorn: httptools directly")
    parser.add_argument(
        "--skip",
        action="append",
        choices=("journal", "kafka"),
        default=[],
        help="leave a stage out (to see what each costs)",
    )
    args = parser.parse_args()
    secret = base64.b64decode(SECRET.removeprefix("whsec_"))
    app = FloorApp(
        secret,
        args.state,
        args.bootstrap,
        args.topic,
        linger=args.linger,
        kafka_linger_ms=args.kafka_linger_ms,
        skip=set(args.skip),
    )
    if args.raw:
        uvloop.run(serve_raw(app, args.port))
        return
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
