"""One listening address of the daemon, served by the embedded uvicorn.

A :class:`Listener` is bound in two steps so that start-up can fail fast: :meth:`bind`
(synchronous, before READY=1 and before any source or sink starts; an address in use or
a permission problem is a :class:`~argbridge.errors.StartupError` naming the address and
its config key) and :meth:`serve` (the supervised service that runs uvicorn on the bound
socket). Should the service ever be restarted, it binds again.

Addresses are TCP ``host:port`` (port 0: a free one, then :attr:`Listener.port`) or a Unix
socket path (created with mode 0600, removed when the listener stops).
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from argbridge.errors import StartupError
from argbridge.http import embed
from argbridge.http.asgi import Router
from argbridge.logging import get_logger


@dataclass(frozen=True, slots=True)
class Address:
    """Where a listener binds; ``key`` names the config keys that set it."""

    key: str
    host: str = "127.0.0.1"
    port: int = 0
    path: Path | None = None

    @property
    def transport(self) -> str:
        return "unix" if self.path is not None else "tcp"

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Listener:
    """One address serving one ASGI app (a :class:`Router`, possibly guarded)."""

    def __init__(
        self,
        name: str,
        address: Address,
        router: Router,
        *,
        app: Any = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.address = address
        #: Routes served here (components may add theirs before start).
        self.router = router
        self._app = router if app is None else app
        self.shutdown_timeout = shutdown_timeout
        #: The bound TCP port (known after :meth:`bind`; useful with port 0).
        self.port: int | None = None
        #: Set once uvicorn accepts connections.
        self.started = anyio.Event()
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._log = get_logger(component=name, kind="service")

    def __repr__(self) -> str:
        return f"Listener({self.name!r}, {self.address})"

    def bind(self) -> None:
        """Bind the address now (idempotent); raises :class:`StartupError`."""
        if self._sock is not None:
            return
        address = self.address
        try:
            if address.path is not None:
                sock = embed.bind_unix(address.path)
                st = os.stat(address.path)
                self._inode = (st.st_dev, st.st_ino)
            else:
                sock = embed.bind(address.host, address.port)
                self.port = sock.getsockname()[1]
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StartupError(
                f"{self.name}: cannot listen on {address} (set by {address.key}): {reason}"
            ) from None
        self._sock = sock

    def close(self) -> None:
        """Release a socket that was bound but never served (start-up failed later)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            self._remove_socket_file()

    def _remove_socket_file(self) -> None:
        path = self.address.path
        if path is None or self._inode is None:
            return
        # Only our own socket file: never one a later daemon created at the same path.
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(path)
        self._inode = None

    async def serve(self, *_: Any) -> None:
        """Serve until cancelled; then shut down gracefully within the bound."""
        self.bind()
        sock, self._sock = self._sock, None
        assert sock is not None
        try:
            async with embed.embedded(
                self._app,
                sock,
                shutdown_timeout=self.shutdown_timeout,
                # No X-Forwarded-For rewriting: the control API's checks see the real peer
                # and the forwarding headers as sent.
                proxy_headers=False,
            ):
                self._log.info(
                    "http.listening",
                    listener=self.name,
                    address=str(self.address),
                    port=self.port,
                )
                self.started.set()
                await anyio.sleep_forever()
        finally:
            self._remove_socket_file()
