"""The sd_notify protocol: unit tests of the module and the real daemon under a fake systemd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from argbridge import notify
from argbridge.notify import (
    HEARTBEAT_KEY,
    Notifier,
    SystemdService,
    format_message,
    socket_address,
    watchdog_interval,
)
from argbridge.runtime import App
from tests.conftest import settings
from tests.support.ops import NotifyListener, daemon_toml, parse, running, wait_until

# -- pure parts ------------------------------------------------------------------------


def test_socket_address_path_and_abstract():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@/org/freedesktop/systemd1/notify/1") == (
        b"\0/org/freedesktop/systemd1/notify/1"
    )
    assert socket_address(None) is None
    assert socket_address("") is None
    assert socket_address("relative/path") is None
    assert socket_address("vsock:2:1234") is None


def test_format_message_one_line_per_key_no_embedded_newlines():
    assert format_message({"READY": 1, "STATUS": "a\nb"}) == b"READY=1\nSTATUS=a b\n"
    assert parse(format_message({"WATCHDOG": 1})) == {"WATCHDOG": "1"}


def test_watchdog_interval_half_of_usec_and_honours_pid():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "42"}, pid=42) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_datagrams(abstract):
    with NotifyListener(abstract=abstract) as listener:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": listener.address})
        assert notifier.enabled
        assert notifier.notify(READY=1, STATUS="hello")
        assert listener.recv(5) == {"READY": "1", "STATUS": "hello"}
        notifier.close()


def test_notifier_disabled_and_failures_never_raise(tmp_path):
    assert not Notifier.from_env({}).notify(READY=1)
    assert not Notifier.from_env({"NOTIFY_SOCKET": "not-absolute"}).enabled
    gone = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert gone.enabled
    assert gone.notify(READY=1) is False  # no such socket: logged, not raised
    gone.close()


def test_from_env_only_under_systemd():
    assert SystemdService.from_env({}) is None
    with NotifyListener() as listener:
        service = SystemdService.from_env(
            {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "4000000"}
        )
        assert service is not None
        assert service.watchdog == 2.0


# -- the service inside a real App ----------------------------------------------------


def _app(tmp_path: Path, **sinks: object) -> App:
    return App(
        settings(
            tmp_path,
            sources={"sample": {"type": "replay", "interval": "5ms"}},
            sinks=sinks or {"file": {"type": "file", "path": "events.jsonl"}},
            routes=[{"sinks": list(sinks or {"file": None})}],
            # A sink that never starts holds the drain to its deadline; keep it short.
            runtime={"drain_timeout": "300ms"},
        ),
        handle_signals=False,
    )


async def test_ready_after_sinks_started_and_stopping_on_shutdown(tmp_path):
    with NotifyListener() as listener:
        app = _app(tmp_path)
        service = SystemdService(Notifier(listener.address), status_interval=0.05)
        app.add_service("systemd", service)
        async with running(app):
            ready = await listener.await_for("READY", "1")
            assert app.workers["file"].started
            assert ready["STATUS"].startswith("running: 1 source(s), 1 sink(s)")
        stopping = await listener.await_for("STOPPING", "1")
        assert "draining" in stopping["STATUS"]
        assert service.ready_sent and service.stopping_sent


async def test_ready_does_not_wait_forever_for_a_sink_that_cannot_start(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the sink wants a directory")
    with NotifyListener() as listener:
        app = _app(tmp_path, file={"type": "file", "path": str(blocker / "events.jsonl")})
        app.add_service("systemd", SystemdService(Notifier(listener.address), ready_grace=30))
        async with running(app):
            ready = await listener.await_for("READY", "1", within=10)
            assert not app.workers["file"].started
            assert ready["STATUS"].startswith("sink still starting: file (start: ")


async def test_watchdog_pings_only_while_the_journal_makes_progress(tmp_path):
    with NotifyListener() as listener:
        app = _app(tmp_path)
        service = SystemdService(Notifier(listener.address), watchdog=0.05, status_interval=0.05)
        app.add_service("systemd", service)
        async with running(app):
            await listener.await_for("WATCHDOG", "1")
            assert await app.journal.get_state(HEARTBEAT_KEY) is not None
            # Stall the journal's writer (as a hung disk would): heartbeats cannot commit.
            # Its thread runs one call at a time, so a call blocked there holds every
            # group commit queued behind it.
            writer = app.journal._writer
            assert writer is not None
            release = threading.Event()
            async with anyio.create_task_group() as stall:
                stall.start_soon(writer.thread.run, lambda: release.wait(60))
                try:
                    # Probes that begin from now on cannot commit their heartbeat. Once
                    # the second of them has begun, every probe started before the stall
                    # is over.
                    first = service._beat
                    await wait_until(lambda: service._beat >= first + 2)
                    stalled_at = service.pings
                    assert service.watchdog_ok is False
                    status = await listener.await_for("STATUS", within=10)
                    while "watchdog withheld" not in status["STATUS"]:
                        status = await listener.await_for("STATUS", within=10)
                    # Two more full intervals without progress: still no ping.
                    await wait_until(lambda: service._beat >= first + 4)
                    assert service.pings == stalled_at
                    assert service.watchdog_ok is False
                finally:
                    release.set()
            await wait_until(lambda: service.pings > stalled_at)
            assert service.watchdog_ok is True


# -- the real daemon under a fake systemd ----------------------------------------------


@pytest.mark.slow
def test_daemon_sends_ready_watchdog_and_stopping(tmp_path):
    config = tmp_path / "argbridge.toml"
    config.write_text(daemon_toml(tmp_path / "state"))
    with NotifyListener(abstract=True) as listener:
        env = {
            **os.environ,
            "NOTIFY_SOCKET": listener.address,
            "WATCHDOG_USEC": "200000",  # ping every 0.1 s
        }
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "argbridge", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            ready = listener.wait_for("READY", "1", timeout=30)
            assert ready["STATUS"].startswith("running:")
            listener.wait_for("WATCHDOG", "1", timeout=10)
            listener.wait_for("WATCHDOG", "1", timeout=10)
            proc.send_signal(signal.SIGTERM)
            stopping = listener.wait_for("STOPPING", "1", timeout=20)
            assert "STATUS" in stopping
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        assert proc.returncode == 0, stderr.decode()
        keys = [k for m in listener.messages for k in m]
        ready_at, stopping_at = keys.index("READY"), keys.index("STOPPING")
        assert ready_at < stopping_at
        assert keys[ready_at:stopping_at].count("WATCHDOG") >= 2
    assert (tmp_path / "state" / "journal" / "CURRENT").exists()


def test_install_adds_the_service_only_under_systemd(tmp_path):
    app = App(settings(tmp_path), handle_signals=False)
    assert notify.install(app, {}) is None
    assert "systemd" not in [n for n, _ in app.services]
    with NotifyListener() as listener:
        assert notify.install(app, {"NOTIFY_SOCKET": listener.address}) is not None
    assert "systemd" in [n for n, _ in app.services]


async def test_watchdog_withheld_when_the_journal_is_closed(tmp_path):
    with NotifyListener() as listener:
        app = _app(tmp_path)
        service = SystemdService(Notifier(listener.address), watchdog=0.05)
        app.add_service("systemd", service)
        with anyio.fail_after(20):
            async with running(app):
                await listener.await_for("WATCHDOG", "1")
        # After shutdown the journal is closed: a probe fails instead of pinging.
        with pytest.raises(Exception, match="closed"):
            await service.probe(app)
