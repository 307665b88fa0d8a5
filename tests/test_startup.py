"""Fail fast at start (issue 11, item 2), against the real daemon process.

A listener that cannot bind, or a state dir that cannot be written, stops ``argbridge
run`` with a non-zero exit and one stderr line naming the address or path, before
READY=1 (nothing reaches ``$NOTIFY_SOCKET``) and before any source or sink starts (no
journal, no sink output). A TCP control listener off loopback without a token is refused
by the configuration check, naming ``control.token``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ops import NotifyListener, daemon_toml

pytestmark = pytest.mark.slow


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    with NotifyListener() as listener:
        yield listener


def run_daemon(config: Path, notify: NotifyListener) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NOTIFY_SOCKET": notify.address, "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("ARGBRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "argbridge", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def assert_nothing_started(result: subprocess.CompletedProcess[str], notify: NotifyListener):
    # The process has exited: any datagram it sent is already queued.
    notify.sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        notify.sock.recv(65536)
    assert "daemon.ready" not in result.stderr
    assert "replay." not in result.stderr and "sink." not in result.stderr


def taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_webhook_port_in_use_exits_1_with_one_line_naming_it(tmp_path, notify):
    state = tmp_path / "state"
    with taken_port() as taken:
        port = taken.getsockname()[1]
        config = tmp_path / "argbridge.toml"
        config.write_text(daemon_toml(state, http_port=port))
        result = run_daemon(config, notify)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"argbridge: http: cannot listen on 127.0.0.1:{port} (set by http.host/http.port): "
        "Address already in use"
    ]
    assert_nothing_started(result, notify)
    assert not (state / "journal.db").exists()
    assert not (state / "events.jsonl").exists()
    assert not (state / "control.sock").exists()


def test_control_and_metrics_ports_in_use_are_named_too(tmp_path, notify):
    state = tmp_path / "state"
    for extra, name, key in (
        ("[control]\nport = {port}\n", "control-tcp", "control.host/control.port"),
        ('[metrics]\nlistener = "own"\nport = {port}\n', "metrics", "metrics.host/metrics.port"),
    ):
        with taken_port() as taken:
            port = taken.getsockname()[1]
            config = tmp_path / "argbridge.toml"
            config.write_text(daemon_toml(state, extra=extra.format(port=port)))
            result = run_daemon(config, notify)
        assert result.returncode == 1, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"argbridge: {name}: cannot listen on 127.0.0.1:{port}")
        assert f"(set by {key})" in line
        assert_nothing_started(result, notify)
        assert not (state / "journal.db").exists()


def test_control_socket_in_use_by_a_running_daemon(tmp_path, notify):
    state = tmp_path / "state"
    state.mkdir()
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(state / "control.sock"))
        other.listen()
        config = tmp_path / "argbridge.toml"
        config.write_text(daemon_toml(state))
        result = run_daemon(config, notify)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert f"control: cannot listen on unix:{state / 'control.sock'}" in line
    assert "another process is listening on it" in line
    assert_nothing_started(result, notify)
    assert not (state / "journal.db").exists()


def test_a_state_dir_that_cannot_be_written_exits_1_naming_it(tmp_path, notify):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state dir's parent should be")
    state = blocker / "state"
    config = tmp_path / "argbridge.toml"
    config.write_text(daemon_toml(state))
    result = run_daemon(config, notify)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"argbridge: state_dir {state} cannot be written: Not a directory"
    ]
    assert_nothing_started(result, notify)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only directory anyway")
def test_a_read_only_state_dir_exits_1_naming_it(tmp_path, notify):
    state = tmp_path / "state"
    state.mkdir(mode=0o500)
    config = tmp_path / "argbridge.toml"
    config.write_text(daemon_toml(state))
    result = run_daemon(config, notify)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"argbridge: state_dir {state} cannot be written: Permission denied"
    ]
    assert_nothing_started(result, notify)


def test_a_non_loopback_tcp_control_listener_without_a_token_refuses_to_start(tmp_path, notify):
    state = tmp_path / "state"
    config = tmp_path / "argbridge.toml"
    # Nothing binds 0.0.0.0: the configuration is refused before any listener exists.
    config.write_text(daemon_toml(state, extra='[control]\nhost = "0.0.0.0"\nport = 8081\n'))
    result = run_daemon(config, notify)
    assert result.returncode == 2
    assert "control.token: required" in result.stderr
    assert "0.0.0.0:8081" in result.stderr
    assert_nothing_started(result, notify)
    assert not state.exists()
    check = subprocess.run(
        [sys.executable, "-m", "argbridge", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 1 and "control.token" in check.stderr
