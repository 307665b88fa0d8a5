"""A real nginx (Debian's package) as a same-host reverse proxy, for tests.

:func:`nginx_binary` finds it (``scripts/install-system-deps.sh`` installs it; ``make
test`` runs that as root when it is missing). :func:`require_nginx` skips a test without
it, except under ``CI=true``, where a missing proxy fails the test instead of hiding it.

:class:`Nginx` starts ``nginx -p TMP -c TMP/nginx.conf -g 'daemon off;'`` as a child
process on free loopback ports, one server block per upstream, each forwarding ``/``
with the headers a typical proxy adds (``X-Forwarded-For``, ``X-Real-IP``,
``X-Forwarded-Proto``). Its pid file, logs and temp dirs live in its own temp dir; no
system nginx is involved.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import pytest

from tests.conftest import free_port

#: Where Debian installs it (``/usr/sbin`` is not on every user's PATH).
SBIN = "/usr/sbin:/usr/local/sbin:/sbin"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path=SBIN)


def require_nginx() -> str:
    """The nginx binary, or skip (fail under ``CI=true``)."""
    binary = nginx_binary()
    if binary is None:
        message = (
            "nginx is not installed: run `sh scripts/install-system-deps.sh` as root "
            "(`make test` does when it runs as root)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _compiled_temp_paths(binary: str) -> list[str]:
    """The ``*_temp_path`` directives this nginx build knows."""
    built = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10).stderr
    return [
        name
        for name in TEMP_PATHS
        if name == "client_body" or f"--without-http_{name}_module" not in built
    ]


class Nginx:
    """nginx forwarding ``/`` of one free loopback port per upstream port."""

    def __init__(self, *upstreams: int) -> None:
        self.binary = require_nginx()
        self.upstreams = upstreams
        self.ports = [free_port() for _ in upstreams]
        self.dir = Path(tempfile.mkdtemp(prefix="argbridge-nginx-"))
        # As root, nginx's workers run as nobody: they must reach their temp dirs.
        self.dir.chmod(0o755)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""

    def config(self) -> str:
        temp = "\n".join(
            f"    {name}_temp_path {self.dir / name};" for name in _compiled_temp_paths(self.binary)
        )
        servers = "\n".join(
            f"""
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}"""
            for port, upstream in zip(self.ports, self.upstreams, strict=True)
        )
        return f"""
worker_processes 1;
pid {self.dir / "nginx.pid"};
error_log {self.dir / "error.log"} info;
events {{
    worker_connections 64;
}}
http {{
    access_log {self.dir / "access.log"};
{temp}
{servers}
}}
"""

    def __enter__(self) -> Self:
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-p",
                str(self.dir),
                "-c",
                str(conf),
                "-e",
                str(self.dir / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            self._wait_listening(deadline=time.monotonic() + 20)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_listening(self, deadline: float) -> None:
        # nginx is an outside process: poll its observable state (its ports), bounded.
        assert self.proc is not None
        for port in self.ports:
            while True:
                if self.proc.poll() is not None:
                    stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"nginx exited: {stderr}{self.error_log}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"nginx is not listening: {self.error_log}") from None
                    time.sleep(0.02)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()  # SIGTERM: nginx's fast shutdown
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@asynccontextmanager
async def running_nginx(*upstreams: int) -> AsyncIterator[Nginx]:
    """:class:`Nginx` from async code (start and stop in a worker thread)."""
    proxy = Nginx(*upstreams)
    await anyio.to_thread.run_sync(proxy.__enter__)
    try:
        yield proxy
    finally:
        await anyio.to_thread.run_sync(proxy.__exit__, None, None, None)
