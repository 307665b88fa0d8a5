"""Running an ASGI app with uvicorn inside the current event loop.

The one place that embeds uvicorn: the daemon's listener, the Arga simulator, the demo's
local destinations and the test servers all go through :func:`embedded`. It
- never lets uvicorn capture SIGINT/SIGTERM (the daemon, the demo or the test owns
  signals; uvicorn's ``capture_signals`` would swap the process's handlers while it runs);
- serves an already bound socket, TCP (:func:`bind`) or Unix (:func:`bind_unix`), so
  callers choose the address (port 0 = a free one) and report bind errors their own way;
- bounds shutdown: graceful for ``shutdown_timeout`` seconds, then open connections are
  aborted, so a stuck request (or an endless SSE stream) never hangs the caller;
- writes each response in one ``send()``: uvicorn's httptools protocol writes the status
  line + headers and the body in two ``transport.write`` calls (two syscalls, two TCP
  segments on the wire for a small JSON answer); :class:`CoalescingTransport` joins what
  one event-loop step writes and hands it to the socket at the end of that step
  (``call_soon``), so the head and body of a small response leave together.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections.abc import AsyncIterator, Generator, Iterable
from typing import Any

import anyio
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


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


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port=0``: a free one); raises ``OSError``."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_unix(path: str | os.PathLike[str], mode: int = 0o600) -> socket.socket:
    """A Unix stream socket bound at ``path`` with permissions ``mode``; raises ``OSError``.

    The mode is set on the socket before ``bind`` (Linux gives the new file the socket's
    mode), so the path is never reachable with wider permissions, whatever the umask. A
    leftover socket file nobody listens on (a daemon killed with SIGKILL) is replaced;
    one that answers is ``EADDRINUSE``; any other kind of file is left alone
    (``EEXIST``).
    """
    target = os.fspath(path)
    if os.path.lexists(target):
        if not stat.S_ISSOCK(os.lstat(target).st_mode):
            raise OSError(errno.EEXIST, "the path exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            # A listener whose backlog is full would block a plain connect: bounded.
            probe.settimeout(2.0)
            try:
                probe.connect(target)
            except (ConnectionRefusedError, FileNotFoundError):
                pass
            except TimeoutError:
                raise OSError(errno.EADDRINUSE, "another process is listening on it") from None
            else:
                raise OSError(errno.EADDRINUSE, "another process is listening on it")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), mode)
        sock.bind(target)
        os.chmod(target, mode)
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def embedded(
    app: Any,
    sock: socket.socket,
    *,
    shutdown_timeout: float = 2.0,
    force_exit: bool = False,
    **options: Any,
) -> AsyncIterator[EmbeddedServer]:
    """Serve ``app`` on the bound ``sock`` until the block exits, then shut down within
    ``shutdown_timeout`` (``force_exit``: without waiting for open connections, for
    servers whose responses never end, like SSE). ``options`` go to
    :class:`uvicorn.Config` (defaults: httptools with one write per response, no lifespan,
    no access log, warnings only, no Server header)."""
    settings: dict[str, Any] = {
        "lifespan": "off",
        "http": CoalescingHttpToolsProtocol,
        "loop": "none",
        "log_level": "warning",
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": max(1, round(shutdown_timeout)),
    }
    settings.update(options)
    config = uvicorn.Config(app, **settings)
    config.load()
    server = EmbeddedServer(config)
    server.lifespan = config.lifespan_class(config)
    try:
        await server.startup(sockets=[sock])
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.main_loop)
            try:
                yield server
            finally:
                server.should_exit = True
                server.force_exit = force_exit
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(shutdown_timeout + 1):
                with contextlib.suppress(Exception):
                    await server.shutdown(sockets=[sock])
            # Whatever did not finish gracefully (an endless stream) is cut off.
            for connection in list(server.server_state.connections):
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abort()
        sock.close()


@contextlib.asynccontextmanager
async def serve(app: Any, host: str = "127.0.0.1", **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free port of ``host``; yields the base URL."""
    sock = bind(host)
    port = sock.getsockname()[1]
    async with embedded(app, sock, **options):
        yield f"http://{host}:{port}"
