"""Separate planes (issue 18): webhooks + health on the public listener, the control API on
its socket (and an optional TCP listener), ``/metrics`` where ``metrics.listener`` says.

Real loopback connections to an in-process daemon; the reverse-proxy view of the same
rules is tests/http/test_reverse_proxy.py, the daemon process's start-up failures
tests/test_startup.py.
"""

from __future__ import annotations

import io
import os
import socket
import stat
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from argbridge.config.settings import is_loopback_host, load_settings
from argbridge.errors import ConfigError, StartupError
from argbridge.http.asgi import Router
from argbridge.http.listener import Address, Listener
from argbridge.logging import configure_logging
from argbridge.runtime import App
from tests.conftest import free_port
from tests.support.ops import (
    base_url,
    control_client,
    control_socket,
    control_tcp_url,
    ops_settings,
    running,
)

#: Every route of the control plane, and /metrics: (method, path).
CONTROL_PATHS: list[tuple[str, str]] = [
    ("GET", "/control/status"),
    ("GET", "/control/tail"),
    ("GET", "/control/follow"),
    ("POST", "/control/follow"),
    ("POST", "/control/start/url-run"),
    ("POST", "/control/start/pr-run"),
    ("GET", "/control/dlq"),
    ("POST", "/control/dlq/replay"),
    ("POST", "/control/replay"),
    ("GET", "/control/sinks/file/progress"),
    ("GET", "/metrics"),
]

FORWARDING = [
    {"x-forwarded-for": "203.0.113.9"},
    {"forwarded": "for=203.0.113.9;proto=https"},
    {"x-real-ip": "203.0.113.9"},
]


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


async def test_the_webhook_listener_serves_no_control_route_and_no_metrics(tmp_path):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app), httpx.AsyncClient(base_url=base_url(app)) as public:
        for method, path in CONTROL_PATHS:
            response = await public.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 404, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        assert (await public.get("/healthz")).status_code == 200
        assert (await public.get("/readyz")).status_code == 200
        # The same paths are served on the control socket.
        async with control_client(app) as control:
            assert (await control.get("/control/status")).status_code == 200
            assert (await control.get("/metrics")).status_code == 200
            assert (await control.get("/control/sinks/file/progress")).status_code == 200


async def test_the_control_socket_is_0600_in_the_state_dir_and_removed_on_stop(tmp_path):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app):
        path = control_socket(app)
        assert path == app.settings.state_dir / "control.sock"
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert not path.exists()


@pytest.mark.parametrize("headers", FORWARDING, ids=lambda h: next(iter(h)))
async def test_relayed_requests_are_refused_without_a_token_and_logged(tmp_path, headers):
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    app = App(ops_settings(tmp_path, free_port(), control={"port": 0}), handle_signals=False)
    async with running(app):
        async with httpx.AsyncClient(base_url=control_tcp_url(app)) as tcp:
            assert (await tcp.get("/control/status")).status_code == 200
            refused = await tcp.get("/control/status", headers=headers)
            assert refused.status_code == 403
            assert "relayed by a proxy" in refused.json()["detail"]
            assert (await tcp.get("/metrics", headers=headers)).status_code == 403
        async with control_client(app) as unix:
            assert (await unix.get("/control/status")).status_code == 200
            assert (await unix.get("/control/tail", headers=headers)).status_code == 403
    refusals = [line for line in log_lines(stream) if line.get("event") == "control.refused"]
    assert [r["transport"] for r in refusals] == ["tcp", "tcp", "unix"]
    assert all(r["forwarding_headers"] == list(headers) for r in refusals)
    assert all("relayed by a proxy" in r["reason"] for r in refusals)
    assert refusals[0]["path"] == "/control/status"


async def test_a_tcp_listener_with_a_token_needs_it_and_never_echoes_it(tmp_path):
    token = "ctl-9b8a7c6d5e4f"
    app = App(
        ops_settings(tmp_path, free_port(), control={"port": 0, "token": token}),
        handle_signals=False,
    )
    async with running(app), httpx.AsyncClient(base_url=control_tcp_url(app)) as tcp:
        for method, path in CONTROL_PATHS:
            denied = await tcp.request(method, path)
            assert denied.status_code == 401, (method, path)
            assert denied.headers["www-authenticate"] == "Bearer"
        auth = {"authorization": f"Bearer {token}"}
        # With the token, a proxied request is authenticated by the token itself.
        ok = await tcp.get("/control/status", headers={**auth, "x-forwarded-for": "192.0.2.1"})
        assert ok.status_code == 200 and token not in ok.text
        assert (await tcp.get("/metrics", headers=auth)).status_code == 200
        # Unknown paths behind the guard tell nothing to a caller without the token.
        assert (await tcp.get("/control/nope")).status_code == 401


@pytest.mark.parametrize(
    ("listener", "on_control", "on_public", "own"),
    [("control", 200, 404, False), ("own", 404, 404, True), ("http", 404, 200, False)],
)
async def test_metrics_exposure_is_a_choice(tmp_path, listener, on_control, on_public, own):
    metrics = {"listener": listener, "port": 0}
    app = App(ops_settings(tmp_path, free_port(), metrics=metrics), handle_signals=False)
    async with running(app), control_client(app) as control:
        assert (await control.get("/metrics")).status_code == on_control
        async with httpx.AsyncClient(base_url=base_url(app)) as public:
            assert (await public.get("/metrics")).status_code == on_public
        if own:
            assert app.planes.metrics is not None
            url = f"http://127.0.0.1:{app.planes.metrics.port}"
            async with httpx.AsyncClient(base_url=url) as scraper:
                response = await scraper.get("/metrics")
                assert response.status_code == 200
                assert b"argbridge_journal_last_seq" in response.content
                # Only /metrics there: not the control API.
                assert (await scraper.get("/control/status")).status_code == 404
        else:
            assert app.planes.metrics is None


async def test_metrics_off_and_control_disabled(tmp_path):
    s = ops_settings(tmp_path, free_port(), control={"enabled": False}, metrics={"listener": "off"})
    app = App(s, handle_signals=False)
    async with running(app), httpx.AsyncClient(base_url=base_url(app)) as public:
        assert app.control is None and [x.name for x in app.planes.listeners()] == ["http"]
        assert (await public.get("/metrics")).status_code == 404
        assert not (app.settings.state_dir / "control.sock").exists()


# -- configuration ------------------------------------------------------------------------


def problems(**overrides: Any) -> dict[str, str]:
    try:
        load_settings(None, **overrides)
    except ConfigError as exc:
        return dict(exc.problems)
    return {}


def test_a_non_loopback_tcp_control_listener_needs_a_token():
    found = problems(control={"host": "0.0.0.0", "port": 8081})
    assert set(found) == {"control.token"}
    assert "0.0.0.0:8081" in found["control.token"]
    assert problems(control={"host": "0.0.0.0", "port": 8081, "token": "t0k"}) == {}
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert problems(control={"host": host, "port": 8081}) == {}, host
    # Without a TCP port the host is not used: the socket alone needs no token.
    assert problems(control={"host": "0.0.0.0"}) == {}


def test_loopback_hosts():
    assert is_loopback_host("127.0.0.1") and is_loopback_host("[::1]")
    assert is_loopback_host("LOCALHOST")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("::")
    assert not is_loopback_host("control.example.com")


def test_moved_and_inconsistent_keys_are_named():
    found = problems(http={"control_token": "x"})
    assert "moved to control.token" in found["http.control_token"]
    assert "control.enabled" in problems(control={"enabled": False})["metrics.listener"]
    found = problems(http={"enabled": False}, metrics={"listener": "http"})
    assert "http.enabled" in found["metrics.listener"]
    found = problems(state_dir="/tmp/" + "d" * 120)
    assert "control.socket" in found
    assert problems(state_dir="/tmp/" + "d" * 120, control={"socket": "/tmp/a.sock"}) == {}


# -- binding --------------------------------------------------------------------------------


def test_a_tcp_address_in_use_is_a_startup_error_naming_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listener = Listener("http", Address("http.host/http.port", "127.0.0.1", port), Router())
        with pytest.raises(StartupError) as exc:
            listener.bind()
    message = str(exc.value)
    assert message == (
        f"http: cannot listen on 127.0.0.1:{port} (set by http.host/http.port): "
        "Address already in use"
    )


def test_a_stale_socket_file_is_replaced_and_a_live_one_is_not(tmp_path: Path):
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a daemon killed with SIGKILL
    first = Listener("control", Address("control.socket", path=path), Router())
    first.bind()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        first._sock.listen()  # type: ignore[union-attr]
        second = Listener("control", Address("control.socket", path=path), Router())
        with pytest.raises(StartupError, match="another process is listening on it"):
            second.bind()
    finally:
        first.close()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(StartupError, match="exists and is not a socket"):
        Listener("control", Address("control.socket", path=path), Router()).bind()
    assert path.read_text() == "not a socket"


async def test_the_daemon_does_not_start_when_a_listener_cannot_bind(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = App(ops_settings(tmp_path, free_port(), control={"port": port}))
        with pytest.raises(StartupError, match=f"control-tcp: cannot listen on 127.0.0.1:{port}"):
            await app.run()
    assert app.stopped.is_set() and not app.ready.is_set()
    # Nothing was opened: no journal, and the webhook port and socket were released.
    state = app.settings.state_dir
    assert not (state / "journal.db").exists()
    assert not (state / "control.sock").exists()
    assert app.http is not None
    app.http.bind()
    app.http.close()
