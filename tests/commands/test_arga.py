"""``argbridge follow`` / ``argbridge start`` against a running daemon."""

from __future__ import annotations

import anyio
import pytest

from argbridge.cli import main
from tests.support.arga_app import running_app
from tests.support.arga_fake import simulator
from tests.support.ops import control_tcp_url

pytestmark = pytest.mark.timeout(30)


async def test_follow_and_start_commands(tmp_path, capsys):
    async with simulator() as sim:
        sim.add_validation_run("r1", steps=1, published=1)
        async with running_app(tmp_path, sim, token="ctl-token-5678") as app:
            url = control_tcp_url(app)
            daemon = ["--daemon", url, "--token", "ctl-token-5678"]

            def run(*argv: str) -> int:
                return main([*argv])

            assert await anyio.to_thread.run_sync(run, "follow", "r1", *daemon) == 0
            assert "now following validation run r1" in capsys.readouterr().out
            assert await anyio.to_thread.run_sync(run, "follow", "d1", "--demo", *daemon) == 0
            assert "demo run d1" in capsys.readouterr().out
            assert await anyio.to_thread.run_sync(run, "follow", "--list", *daemon) == 0
            assert "r1" in capsys.readouterr().out
            code = await anyio.to_thread.run_sync(
                run, "start", "url-run", "--url", "https://example.com", "--prompt", "p", *daemon
            )
            assert code == 0
            assert f"started url-run {sim.started_runs[0]}" in capsys.readouterr().out
            code = await anyio.to_thread.run_sync(run, "start", "pr-run", "--repo", "a/b", *daemon)
            assert code == 2
            code = await anyio.to_thread.run_sync(
                run,
                "follow",
                "r1",
                "--daemon",
                url,
                "--token",
                "bad",
            )
            assert code == 1
            assert "401" in capsys.readouterr().err
            # Over the control socket no token is needed; the hidden --url alias of
            # `follow` still names a TCP control listener.
            state = ["--state-dir", str(app.settings.state_dir)]
            assert await anyio.to_thread.run_sync(run, "follow", "--list", *state) == 0
            assert "r1" in capsys.readouterr().out
            code = await anyio.to_thread.run_sync(run, "follow", "--list", "--url", url)
            assert code == 1
            assert "401" in capsys.readouterr().err


def test_unreachable_daemon(capsys):
    from tests.conftest import free_port

    with pytest.raises(SystemExit) as exc:
        main(["follow", "r1", "--daemon", f"http://127.0.0.1:{free_port()}"])
    assert exc.value.code == 3
    assert "cannot reach http://127.0.0.1:" in capsys.readouterr().err


def test_config_without_control_is_a_usage_error(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[control]\nenabled = false\n")
    with pytest.raises(SystemExit) as exc:
        main(["follow", "r1", "--config", str(cfg)])
    assert exc.value.code == 2
    assert "control.enabled is false" in capsys.readouterr().err
