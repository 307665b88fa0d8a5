"""One write per HTTP response from uvicorn: a subclass of uvicorn's httptools protocol.

uvicorn's ``HttpToolsProtocol`` writes a response's status line and headers and its body
in two ``transport.write`` calls: two ``send()`` syscalls, and two TCP segments on the
wire for a small JSON answer. :class:`CoalescingHttpToolsProtocol` hands the protocol a
:class:`CoalescingTransport` that joins what one event-loop step writes, and flushes it
when uvicorn says the response is complete, so the head and body leave together.

This reaches beyond uvicorn's documented API: it subclasses ``HttpToolsProtocol`` (a
class of ``uvicorn.protocols.http.httptools_impl``, passed as ``Config(http=...)``) and
relies on two of its methods: ``connection_made`` keeping the transport it is given as
the one it writes to, and ``on_response_complete`` being called once per finished
response. ``tests/compat/test_uvicorn_coalesce.py`` checks both and fails loudly when
uvicorn changes either.

Measured again after journal v2 (issue 15), the daemon with and without it (``"http":
"httptools"``), ``bench_webhooks --runs 2``, three interleaved pairs, 2026-12-03 14:17,
quiet: the daemon's requests/s 5,483, 4,840, 4,328, 4,997, 3,882, 4,915 (median 4,870)
against 3,712, 3,962, 4,961, 4,387, 4,242, 3,834 (median 4,100): **+19 %**; CPU per
request 212-282 µs (median 243) against 235-277 (median 270): **-10 %**. Both above the
5 % a dependency's internals must buy, so it stays (first measured 2026-11-23: ~12 % of
the daemon's main thread was the second ``send()``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport(asyncio.Transport):
    """A transport proxy that turns the writes of one event-loop step into one write.

    The first write is held and a flush is scheduled with ``call_soon``; later writes
    join it until :meth:`flush` (called by the protocol when a response is complete, so
    a finished response leaves exactly when it did without the proxy) or the scheduled
    flush at the end of the step (a streamed response's head and first chunks).
    Everything that could reorder or lose held bytes (``close``, ``abort``,
    ``write_eof``, ``set_protocol``) flushes first, so the bytes on the wire and their
    order are exactly what the protocol wrote, only in fewer ``send()`` calls. Held
    bytes are at most one step's writes (flow control sees them through
    :meth:`get_write_buffer_size`).
    """

    __slots__ = ("_handle", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._handle: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        held = self._held
        if held is None:
            self._held = [bytes(data)]
            self._handle = self._loop.call_soon(self._flush)
        else:
            held.append(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand the held bytes to the real transport now."""
        handle = self._handle
        if handle is not None:
            self._handle = None
            handle.cancel()
            self._flush()

    def _flush(self) -> None:
        held = self._held
        if held is None:
            return
        self._held = None
        self._handle = None
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self.flush()
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        held = sum(map(len, self._held)) if self._held else 0
        return self._transport.get_write_buffer_size() + held

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CoalescingTransport`: a
    response's head and body leave in one write when the response completes."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))

    def on_response_complete(self) -> None:
        transport = self.transport
        if isinstance(transport, CoalescingTransport):
            transport.flush()
        super().on_response_complete()
