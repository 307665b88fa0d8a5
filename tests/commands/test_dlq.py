"""The ``argbridge dlq``/``replay`` commands against a running daemon."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from argbridge.cli import main
from argbridge.delivery.timespec import parse_since
from tests.conftest import make_event
from tests.http.test_control_dlq import SECRET, daemon_settings
from tests.support.daemon import running_app
from tests.support.ops import control_tcp_url
from tests.support.receivers import Reply, WebhookReceiver, serve


def test_parse_since():
    now = 1_800_000_000.0
    assert parse_since("2h", now) == now - 7200
    assert parse_since("1700000000", now) == 1_700_000_000.0
    assert parse_since("2026-01-02T03:04:05Z", now) == 1767323045.0
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_since("soon", now)


async def cli(*argv: str) -> int:
    return await anyio.to_thread.run_sync(main, list(argv))


async def test_cli_lists_and_replays(tmp_path: Path, capsys):
    receiver = WebhookReceiver([SECRET])
    receiver.default = Reply(500)
    async with serve(receiver.router) as base:
        s = daemon_settings(tmp_path, base + "/hook")
        async with running_app(s) as (app, _):
            url = control_tcp_url(app)
            for n in range(2):
                await app.journal.append(make_event(n))
            with anyio.fail_after(10):
                while await app.journal.count_dead_letters("hook") < 2:
                    await anyio.lowlevel.checkpoint()
            capsys.readouterr()
            assert await cli("dlq", "list", "--url", url, "--sink", "hook") == 0
            out = capsys.readouterr().out
            assert "2 of 2 dead letter(s)" in out and "HTTP 500" in out

            assert await cli("dlq", "replay", "--url", url) == 2  # nothing chosen
            receiver.default = Reply(204)
            assert await cli("dlq", "replay", "--url", url, "--sink", "hook") == 0
            out = capsys.readouterr().out
            assert "requeued 2 dead letter(s) to hook" in out
            assert "2/2 attempted, 0 pending, 0 dead letter(s)" in out

            assert await cli("replay", "--url", url, "--sink", "file", "--since", "1h") == 0
            out = capsys.readouterr().out
            assert "replaying 2 event(s)" in out and "2/2 (100%)" in out

            assert await cli("dlq", "list", "--url", url, "--sink", "nope") == 1
            assert "no sink named" in capsys.readouterr().err

            # The same over the control socket, found from the state dir.
            state = ["--state-dir", str(s.state_dir)]
            assert await cli("dlq", "list", *state, "--sink", "hook") == 0
            assert "no dead letters for sink hook" in capsys.readouterr().out


async def test_cli_reports_an_unreachable_daemon(capsys):
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert await cli("dlq", "list", "--url", url) == 3
    assert f"cannot reach {url}" in capsys.readouterr().err


async def test_cli_reports_a_missing_control_socket(tmp_path: Path, capsys):
    assert await cli("dlq", "list", "--state-dir", str(tmp_path)) == 3
    err = capsys.readouterr().err
    assert f"cannot connect to unix:{tmp_path / 'control.sock'}" in err
    assert "is the daemon running with this state dir?" in err
