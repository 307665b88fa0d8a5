"""A TCP forwarder on a free loopback port that a test can cut like a network.

:class:`TcpProxy` accepts on ``port`` and forwards every connection to ``target``, in a
thread of its own (so it keeps forwarding whatever the test's event loop does). ``cut()``
behaves like a pulled cable: the forwarding stops in both directions and new connections
are accepted but never answered, so clients see silence, not a refusal. ``restore()``
closes the dead connections (as a peer's timeout would) and forwards again.
"""

from __future__ import annotations

import selectors
import socket
import threading
from contextlib import suppress


class TcpProxy:
    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._held: list[socket.socket] = []
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}")
        self._thread.daemon = True
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        self._cut.set()

    def restore(self) -> None:
        with self._lock:
            for sock in [*self._pairs, *self._held]:
                with suppress(OSError):
                    sock.close()
            self._pairs.clear()
            self._held.clear()
            self._cut.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.restore()
        self._listener.close()

    def _run(self) -> None:
        # A peer that dies (kill -9 of the broker) leaves closed sockets behind: a
        # selector that trips over one is rebuilt, never the end of the forwarding.
        while not self._stop.is_set():
            try:
                self._serve()
            except (OSError, ValueError):
                with self._lock:
                    for sock, peer in list(self._pairs.items()):
                        if sock.fileno() < 0 or peer.fileno() < 0:
                            self._pairs.pop(sock, None)
                            with suppress(OSError):
                                sock.close()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self._listener, selectors.EVENT_READ)
            registered: set[socket.socket] = set()
            while not self._stop.is_set():
                with self._lock:
                    live = set() if self._cut.is_set() else set(self._pairs)
                    for sock in registered - live:
                        with suppress(KeyError, ValueError, OSError):
                            sel.unregister(sock)
                    registered &= live
                    for sock in live - registered:
                        if sock.fileno() >= 0:
                            sel.register(sock, selectors.EVENT_READ)
                            registered.add(sock)
                for key, _ in sel.select(timeout=0.05):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    if ready is self._listener:
                        self._accept()
                    else:
                        self._forward(ready)
        finally:
            sel.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        with self._lock:
            if self._cut.is_set():
                self._held.append(client)  # accepted, never answered
                return
        try:
            upstream = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        with self._lock:
            self._pairs[client] = upstream
            self._pairs[upstream] = client

    def _forward(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._pairs.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        with self._lock:
            for s in (sock, peer):
                self._pairs.pop(s, None)
                with suppress(OSError):
                    s.close()
