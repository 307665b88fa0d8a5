"""``argbridge status`` and ``argbridge tail`` against a running in-process daemon, over its
control socket (found from ``--state-dir`` or ``--config``) or its TCP control listener."""

from __future__ import annotations

import functools
import re

import anyio
import orjson
import pytest

from argbridge.cli import main
from argbridge.commands.ops import format_item
from argbridge.runtime import App
from tests.conftest import free_port, make_event
from tests.support.ops import (
    all_delivered,
    control_tcp_url,
    ops_settings,
    running,
    wait_until,
)


async def cli(*argv: str) -> int:
    """Run the CLI in a worker thread (it uses a blocking HTTP client)."""
    return await anyio.to_thread.run_sync(functools.partial(main, list(argv)))


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


def output(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """What the CLI printed (the in-process daemon's own log lines share stdout)."""
    out, err = capsys.readouterr()
    keep = [line for line in out.splitlines() if not _LOG_LINE.match(line)]
    return "\n".join(keep), err


async def test_status_pretty_prints_a_ready_daemon(tmp_path, capsys):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app):
        await wait_until(lambda: all_delivered(app))
        code = await cli("status", "--state-dir", str(app.settings.state_dir))
        out = output(capsys)[0]
    assert code == 0
    first = out.splitlines()[0]
    assert first.startswith("argbridge ") and first.endswith(": ready")
    assert "sources paused: no" in out
    sink_line = next(line for line in out.splitlines() if line.startswith("file "))
    assert sink_line.split()[:3] == ["file", "file", "ready"]
    source_line = next(line for line in out.splitlines() if line.startswith("sample "))
    assert source_line.split()[:3] == ["sample", "replay", "ready"]


async def test_status_exit_code_and_last_error_when_a_sink_is_down(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    app = App(
        ops_settings(
            tmp_path,
            free_port(),
            sinks={"file": {"type": "file", "path": str(blocker / "events.jsonl")}},
        ),
        handle_signals=False,
    )
    async with running(app):
        await wait_until(lambda: app.workers["file"].last_error is not None)
        state = ["--state-dir", str(app.settings.state_dir)]
        code = await cli("status", *state)
        out = output(capsys)[0]
        json_code = await cli("status", *state, "--json")
        doc = orjson.loads(output(capsys)[0])
    assert code == 1
    assert "NOT READY (sink:file)" in out.splitlines()[0]
    sink_line = next(line for line in out.splitlines() if line.startswith("file "))
    assert "starting" in sink_line and "start: " in sink_line
    assert json_code == 1 and doc["not_ready"] == ["sink:file"]


async def test_status_from_config_uses_its_socket_and_url_uses_the_token(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TEST_CONTROL_TOKEN", "tok-0123456789")
    app = App(
        ops_settings(
            tmp_path,
            free_port(),
            control={"port": 0, "token": "env:TEST_CONTROL_TOKEN"},
        ),
        handle_signals=False,
    )
    config = tmp_path / "argbridge.toml"
    config.write_text(
        f'state_dir = "{app.settings.state_dir}"\n'
        '[control]\nport = 9\ntoken = "env:TEST_CONTROL_TOKEN"\n'
    )
    async with running(app):
        # The socket needs no token (mode 0600 is its access control).
        monkeypatch.delenv("TEST_CONTROL_TOKEN")
        assert await cli("status", "--config", str(config)) == 0
        output(capsys)
        # The TCP listener refuses without the token, and the CLI says why.
        url = control_tcp_url(app)
        assert await cli("status", "--url", url) == 3
        err = output(capsys)[1]
        assert "refused the control token (401)" in err
        monkeypatch.setenv("TEST_CONTROL_TOKEN", "tok-0123456789")
        assert await cli("status", "--url", url, "--token", "env:TEST_CONTROL_TOKEN") == 0
        out, err = output(capsys)
        assert "tok-0123456789" not in out + err
        # --config with --url: the TCP listener, with the config's control.token.
        assert await cli("status", "--config", str(config), "--url", url) == 0
        output(capsys)


async def test_status_unreachable_daemon(tmp_path, capsys):
    code = await cli("status", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "5")
    err = output(capsys)[1]
    assert code == 3
    assert "cannot reach http://127.0.0.1:" in err
    assert "control.port" in err
    code = await cli("status", "--state-dir", str(tmp_path))
    err = output(capsys)[1]
    assert code == 3
    assert f"cannot connect to unix:{tmp_path / 'control.sock'}" in err


async def test_tail_prints_journaled_events_filtered_by_type(tmp_path, capsys):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app):
        await wait_until(lambda: all_delivered(app))
        state = ["--state-dir", str(app.settings.state_dir)]
        code = await cli("tail", *state, "--after", "0", "--type", "argus.")
        out = output(capsys)[0]
        json_code = await cli("tail", *state, "-n", "2", "--json")
        json_out = output(capsys)[0]
    assert code == 0
    lines = out.splitlines()
    assert lines and all(line.split()[2].startswith("argus.incident.") for line in lines)
    assert json_code == 0
    events = [orjson.loads(line) for line in json_out.splitlines()]
    assert len(events) == 2 and all(e["specversion"] == "1.0" for e in events)


async def test_tail_follow_prints_events_as_they_are_journaled(tmp_path, capsys):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app):
        await wait_until(lambda: all_delivered(app))
        last = app.journal.last_seq
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                result: list[int] = []

                async def follow() -> None:
                    result.append(
                        await cli(
                            "tail",
                            "--socket",
                            str(app.settings.state_dir / "control.sock"),
                            "--follow",
                            "--after",
                            str(last),
                            "--count",
                            "1",
                            "--type",
                            "arga.",
                        )
                    )

                tg.start_soon(follow)
                # --after makes this independent of when the stream opens.
                await app.journal.append(make_event(7, type_="argus.incident.updated"))
                await app.journal.append(make_event(8, type_="arga.validation.step_result"))
                # Leaving the task group waits for the CLI to print its one event and exit.
        out = output(capsys)[0]
    assert result == [0]
    (line,) = out.splitlines()
    assert line.split()[0] == str(last + 2)
    assert "arga.validation.step_result" in line


def test_format_item():
    item = {
        "seq": 42,
        "appended_at": 0.5,
        "event": {"id": "abc", "type": "arga.demorun.done", "subject": "run-1"},
    }
    assert format_item(item) == (
        "      42  1970-01-01T00:00:00.500Z  arga.demorun.done" + " " * 23 + "  run-1  abc"
    )
    assert orjson.loads(format_item(item, as_json=True))["id"] == "abc"


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = output(capsys)[0]
    assert "status" in out and "tail" in out


async def test_status_with_a_systemd_config_needs_only_the_control_credential(
    tmp_path, capsys, monkeypatch
):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "control-token").write_text("ctl-token-abcdef\n")
    app = App(
        ops_settings(tmp_path, free_port(), control={"port": 0, "token": "ctl-token-abcdef"}),
        handle_signals=False,
    )
    # A daemon config as under systemd: every secret is a credential of the unit.
    config = tmp_path / "argbridge.toml"
    config.write_text(
        f'state_dir = "{app.settings.state_dir}"\n'
        '[http]\nenabled = true\nhost = "0.0.0.0"\nport = 8080\n'
        '[control]\ntoken = "credential:control-token"\n'
        '[sources.arga]\ntype = "arga"\napi_key = "credential:arga-api-key"\n'
    )
    async with running(app):
        # The socket: no credential is read at all.
        assert await cli("status", "--config", str(config)) == 0
        output(capsys)
        url = control_tcp_url(app)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
        assert await cli("status", "--config", str(config), "--url", url) == 0
        output(capsys)
        # From a shell outside the unit, with no access to its credentials: a clear hint.
        monkeypatch.delenv("CREDENTIALS_DIRECTORY")
        assert await cli("status", "--config", str(config), "--url", url) == 2
        err = output(capsys)[1]
        assert "control.token" in err
        assert "--token file:/etc/argbridge/credentials/control-token" in err
        token_file = f"file:{creds / 'control-token'}"
        assert await cli("status", "--url", url, "--token", token_file) == 0


async def test_status_config_errors_name_the_key(tmp_path, capsys):
    config = tmp_path / "argbridge.toml"
    config.write_text("[control]\nenabled = false\n")
    assert await cli("status", "--config", str(config)) == 2
    assert "control.enabled is false" in output(capsys)[1]
    config.write_text('[control]\nenabled = "maybe"\n')
    assert await cli("status", "--config", str(config)) == 2
    assert "control.enabled" in output(capsys)[1]
    assert await cli("status", "--config", str(tmp_path / "missing.toml")) == 2
    assert "does not exist" in output(capsys)[1]
