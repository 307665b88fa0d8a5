"""Test helpers for the operations tests: a fake systemd notify socket, daemon configs,
and an in-process daemon with its HTTP server on a free port."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import httpx

from argbridge.runtime import App


class NotifyListener:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``.

    ``abstract=True`` binds in the Linux abstract namespace (``@name``); otherwise a
    short path under the system temp dir (AF_UNIX paths are limited to 107 bytes).
    """

    def __init__(self, *, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: str | None = None
        if abstract:
            name = f"argbridge-test-{uuid.uuid4().hex}"
            self.sock.bind(b"\0" + name.encode())
            self.address = "@" + name
        else:
            self._dir = tempfile.mkdtemp(prefix="abn-")
            path = os.path.join(self._dir, "notify")
            self.sock.bind(path)
            self.address = path
        self.messages: list[dict[str, str]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def recv(self, timeout: float) -> dict[str, str]:
        """The next datagram as a dict (raises ``TimeoutError``)."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        message = parse(data)
        self.messages.append(message)
        return message

    def wait_for(self, key: str, value: str | None = None, timeout: float = 20.0) -> dict[str, str]:
        """Receive until a datagram carries ``key`` (with ``value`` if given)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {key} datagram; got {self.messages}")
            message = self.recv(left)
            if key in message and (value is None or message[key] == value):
                return message

    async def await_for(
        self, key: str, value: str | None = None, within: float = 20.0
    ) -> dict[str, str]:
        """:meth:`wait_for` from async code (in a worker thread)."""
        return await anyio.to_thread.run_sync(lambda: self.wait_for(key, value, within))


def parse(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in data.decode().splitlines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


def daemon_toml(state_dir: Path, *, http_port: int | None = None, extra: str = "") -> str:
    """A daemon config: the replay sample into a file sink."""
    http = (
        f'[http]\nenabled = true\nhost = "127.0.0.1"\nport = {http_port}\n'
        if http_port is not None
        else "[http]\nenabled = false\n"
    )
    return (
        f'state_dir = "{state_dir}"\n'
        '[log]\nlevel = "info"\nformat = "json"\n'
        f"{http}"
        '[sources.sample]\ntype = "replay"\ninterval = "5ms"\n'
        '[sinks.file]\ntype = "file"\npath = "events.jsonl"\n'
        '[[routes]]\nsinks = ["file"]\n'
        f"{extra}"
    )


@asynccontextmanager
async def running(app: App, *, wait_http: bool = True) -> AsyncIterator[App]:
    """Run ``app`` in a task group until the block ends, then stop it gracefully."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        with anyio.fail_after(20):
            await app.ready.wait()
            if wait_http:
                await listening(app)
        try:
            yield app
        finally:
            app.request_shutdown()
            with anyio.fail_after(20):
                await app.stopped.wait()


async def wait_until(predicate: Any, within: float = 10.0, step: float = 0.01) -> None:
    """Poll ``predicate()`` until true, for component state that has no event to wait on
    (e.g. ``worker.started``); bounded by ``within`` seconds."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but plain attributes
            await anyio.sleep(step)


def ops_settings(tmp_path: Path, port: int, **overrides: Any) -> Any:
    """Settings of a small daemon: the replay sample into a file sink, HTTP on ``port``."""
    from tests.conftest import settings

    base: dict[str, Any] = {
        "http": {"enabled": True, "host": "127.0.0.1", "port": port},
        "sources": {"sample": {"type": "replay", "interval": "1ms"}},
        "sinks": {"file": {"type": "file", "path": "events.jsonl"}},
        "routes": [{"sinks": ["file"]}],
        "runtime": {"drain_timeout": "300ms"},
    }
    base.update(overrides)
    return settings(tmp_path, **base)


def all_delivered(app: App, sink: str = "file") -> bool:
    """The replay sample finished and ``sink`` acknowledged everything journaled."""
    source = app.sources.get("sample")
    finished = bool(getattr(source, "finished", True))
    journal = app.journal
    return finished and journal.last_seq > 0 and journal.cursor(sink) == journal.last_seq


def base_url(app: App) -> str:
    """The public webhook listener."""
    assert app.http is not None and app.http.port is not None
    return f"http://127.0.0.1:{app.http.port}"


async def listening(app: App) -> None:
    """Wait until every listener of ``app`` accepts connections."""
    for listener in app.planes.listeners():
        await listener.started.wait()


def control_socket(app: App) -> Path:
    assert app.control is not None and app.control.address.path is not None
    return app.control.address.path


def control_client(app: App, **kw: Any) -> httpx.AsyncClient:
    """A client of the control API over the daemon's Unix socket."""
    transport = httpx.AsyncHTTPTransport(uds=str(control_socket(app)))
    return httpx.AsyncClient(base_url="http://argbridge", transport=transport, **kw)


def control_tcp_url(app: App) -> str:
    """The TCP control listener (``control.port``)."""
    listener = app.planes.control_tcp
    assert listener is not None and listener.port is not None
    return f"http://127.0.0.1:{listener.port}"
