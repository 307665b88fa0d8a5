"""Contract: uvicorn's httptools protocol, subclassed by compat.uvicorn_coalesce, still
keeps the transport it is handed as the one it writes to, and still calls
``on_response_complete`` once per finished response; and with the subclass, a response
leaves in one write, while a streamed head, an answer before a close and an interim
``100 Continue`` are not held back."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import anyio
import httpx
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from argbridge.compat.uvicorn_coalesce import CoalescingHttpToolsProtocol, CoalescingTransport
from argbridge.http import embed

# -- the contract: what the subclass relies on ---------------------------------------------


def test_the_methods_it_overrides_are_uvicorns():
    for name in ("connection_made", "on_response_complete"):
        assert name in vars(HttpToolsProtocol), f"uvicorn's HttpToolsProtocol has no {name}"
    assert list(inspect.signature(HttpToolsProtocol.connection_made).parameters) == [
        "self",
        "transport",
    ]
    assert list(inspect.signature(HttpToolsProtocol.on_response_complete).parameters) == ["self"]


async def test_uvicorn_writes_through_the_transport_it_was_handed_and_completes_each_response():
    completed: list[type[asyncio.BaseTransport]] = []

    class Watched(CoalescingHttpToolsProtocol):
        def on_response_complete(self) -> None:
            completed.append(type(self.transport))
            super().on_response_complete()

    async with embed.serve(small_json, http=Watched) as url:
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                assert (await client.post(url + "/", content=b"{}")).status_code == 200
    # Called once per response, with the coalescing proxy as the protocol's transport.
    assert completed == [CoalescingTransport] * 3


# -- one write per response ---------------------------------------------------------------


class _Recording(asyncio.Transport):
    """A pass-through under the coalescing proxy: records what reaches the socket."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        super().__init__()
        self._t = transport
        self._writes = writes

    def write(self, data: Any) -> None:
        self._writes.append(bytes(data))
        self._t.write(data)

    def __getattribute__(self, name: str) -> Any:
        if name in ("write", "_t", "_writes", "__class__"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "_t"), name)


def recording_protocol(writes: list[bytes]) -> type[CoalescingHttpToolsProtocol]:
    class Recorded(CoalescingHttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(_Recording(transport, writes))

    return Recorded


async def small_json(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b'{"status":"accepted"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def test_a_response_leaves_in_one_write_with_head_and_body():
    writes: list[bytes] = []
    async with embed.serve(small_json, http=recording_protocol(writes)) as url:
        async with httpx.AsyncClient() as client:
            for _ in range(3):  # keep-alive: one write per response, every time
                response = await client.post(url + "/", content=b"{}")
                assert response.status_code == 200
                assert response.json() == {"status": "accepted"}
    assert len(writes) == 3
    for data in writes:
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert data.endswith(b'\r\n\r\n{"status":"accepted"}')


async def test_a_streamed_response_head_is_not_held_back():
    finish = anyio.Event()

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await finish.wait()  # only after the client saw the head and the first chunk
        await send({"type": "http.response.body", "body": b"last"})

    async with embed.serve(stream) as url:
        async with httpx.AsyncClient() as client:
            with anyio.fail_after(5):
                async with client.stream("GET", url + "/") as response:
                    assert response.status_code == 200
                    chunks = response.aiter_raw()
                    assert await chunks.__anext__() == b"first"
                    finish.set()
                    assert b"".join([c async for c in chunks]) == b"last"


async def test_a_refused_body_answer_is_written_before_the_close():
    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b"too large"
        headers = [(b"content-length", b"%d" % len(body)), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async with embed.serve(refuse) as url:
        port = int(url.rsplit(":", 1)[1])
        with anyio.fail_after(5):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.send(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            received = b""
            try:
                while True:
                    received += await stream.receive()
            except anyio.EndOfStream:
                pass
            await stream.aclose()
    assert received.startswith(b"HTTP/1.1 413 ")
    assert received.endswith(b"\r\n\r\ntoo large")


async def test_expect_100_continue_is_not_held_back():
    async def echo_size(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"%d" % size
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async with embed.serve(echo_size) as url:
        port = int(url.rsplit(":", 1)[1])
        with anyio.fail_after(5):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            await stream.send(
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n"
            )
            # The body is sent only after the interim answer arrived (it must not wait
            # for a later write that never comes).
            assert (await stream.receive()).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            await stream.send(b"hello")
            received = b""
            while not received.endswith(b"\r\n\r\n5"):
                received += await stream.receive()
            await stream.aclose()
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
