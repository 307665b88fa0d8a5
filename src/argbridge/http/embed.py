"""Running an ASGI app with uvicorn inside the current event loop.

The one place that embeds uvicorn: the daemon's listener, the Arga simulator, the demo's
local destinations and the test servers all go through :func:`embedded`. It
- never lets uvicorn capture SIGINT/SIGTERM (the daemon, the demo or the test owns
  signals; uvicorn's ``capture_signals`` would swap the process's handlers while it runs);
- serves an already bound socket, TCP (:func:`bind`) or Unix (:func:`bind_unix`), so
  callers choose the address (port 0 = a free one) and report bind errors their own way;
- bounds shutdown: graceful for ``shutdown_timeout`` seconds, then open connections are
  aborted, so a stuck request (or an endless SSE stream) never hangs the caller;
- writes each response in one ``send()``, through
  :class:`~argbridge.compat.uvicorn_coalesce.CoalescingHttpToolsProtocol` (uvicorn's
  httptools protocol writes the head and the body in two calls; the subclass, its
  measured win and its contract test are in that compat module).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import AsyncIterator, Generator
from typing import Any

import anyio
import uvicorn

from argbridge.compat.uvicorn_coalesce import CoalescingHttpToolsProtocol


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


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
