"""A real nginx in front of the daemon, as a same-host TLS-terminating proxy would be
(issue 18): it forwards ``/`` of its port to the webhook listener.

- signed webhooks pass through it and verify (and a bad signature is still refused);
- every control path and ``/metrics`` answers 404 through it;
- an operator who also proxies the loopback TCP control listener without a token gets
  403 for every request (nginx adds ``X-Forwarded-For``/``X-Real-IP``), with a log line;
- the CLI (a separate process) works over the control socket meanwhile;
- a TCP control listener on a non-loopback address without a token never starts.

nginx comes from Debian's packages (``scripts/install-system-deps.sh``); without it these
tests skip, except under ``CI=true`` where they fail (tests/support/nginx.py).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import orjson
import pytest

from argbridge.config.settings import load_settings
from argbridge.logging import configure_logging
from argbridge.runtime import App
from tests.conftest import free_port
from tests.http.test_planes import CONTROL_PATHS, log_lines
from tests.support.nginx import require_nginx, running_nginx
from tests.support.ops import control_tcp_url, running
from tests.support.webhooks import SECRET, incident_body, sw_headers

pytestmark = pytest.mark.timeout(60)


def write_config(tmp_path: Path, *, control: str = "port = 0\n") -> Path:
    config = tmp_path / "argbridge.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        '[log]\nlevel = "info"\nformat = "json"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {free_port()}\nshutdown_timeout = "2s"\n'
        f"[control]\n{control}"
        f'[sources.argus]\ntype = "argus-webhook"\nsecrets = ["{SECRET}"]\n'
        '[sinks.file]\ntype = "file"\npath = "events.jsonl"\n'
    )
    return config


async def cli(*argv: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGBRIDGE_")}
    return await anyio.run_process([sys.executable, "-m", "argbridge", *argv], check=False, env=env)


async def test_only_webhooks_and_health_pass_through_the_proxy(tmp_path):
    require_nginx()
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    config = write_config(tmp_path)
    app = App(load_settings(config), handle_signals=False)
    async with running(app):
        assert app.http is not None and app.http.port is not None
        control_port = int(control_tcp_url(app).rsplit(":", 1)[1])
        async with (
            running_nginx(app.http.port, control_port) as proxy,
            httpx.AsyncClient(base_url=proxy.urls[0], timeout=10) as public,
        ):
            # Webhooks pass through and verify.
            body = incident_body("INC-7")
            headers = {**sw_headers(body), "content-type": "application/json"}
            accepted = await public.post("/webhooks/argus", content=body, headers=headers)
            assert accepted.status_code == 200, accepted.text
            (record,) = await app.journal.read_after(0, 10)
            assert record.event.type == "argus.incident.created"
            assert record.event.subject == "INC-7"
            forged = {
                **sw_headers(body, secret="whsec_" + "Zm9yZ2VkLXNlY3JldC12YWx1ZS0xMjM0NTY3OA==")
            }
            refused = await public.post(
                "/webhooks/argus",
                content=body,
                headers={**forged, "content-type": "application/json"},
            )
            assert refused.status_code == 401
            assert app.journal.last_seq == 1
            assert (await public.get("/healthz")).status_code == 200
            assert (await public.get("/readyz")).status_code == 200

            # The control plane and /metrics are not there.
            for method, path in CONTROL_PATHS:
                response = await public.request(method, path, json={} if method == "POST" else None)
                assert response.status_code == 404, (method, path, response.text)
                assert "argbridge_" not in response.text

            # Proxying the loopback control port as well does not open it: nginx's
            # forwarding headers make every tokenless request a 403.
            async with httpx.AsyncClient(base_url=proxy.urls[1], timeout=10) as relayed:
                for method, path in CONTROL_PATHS:
                    response = await relayed.request(method, path)
                    assert response.status_code == 403, (method, path, response.text)
            # Direct local clients still get in.
            async with httpx.AsyncClient(base_url=control_tcp_url(app)) as direct:
                assert (await direct.get("/control/status")).status_code == 200

            # The CLI, another process, over the control socket found from --config.
            status = await cli("status", "--config", str(config))
            assert status.returncode == 0, status.stderr
            out = status.stdout.decode()
            assert f"at unix:{app.settings.state_dir / 'control.sock'}: ready" in out
            tail = await cli("tail", "--config", str(config), "--after", "0", "--json")
            assert tail.returncode == 0, tail.stderr
            (event,) = [orjson.loads(line) for line in tail.stdout.splitlines()]
            assert event["id"] == record.event.id
    refusals = [line for line in log_lines(stream) if line.get("event") == "control.refused"]
    assert len(refusals) == len(CONTROL_PATHS)
    assert all("x-forwarded-for" in r["forwarding_headers"] for r in refusals)
    assert all("relayed by a proxy" in r["reason"] for r in refusals)


async def test_a_public_tcp_control_listener_without_a_token_refuses_to_start(tmp_path):
    # What an operator might try so that "the proxy can reach the control API".
    config = write_config(tmp_path, control='host = "0.0.0.0"\nport = 8081\n')
    result = await cli("run", "--config", str(config))
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "control.token: required" in err and "0.0.0.0:8081" in err
    assert not (tmp_path / "state").exists()


def test_without_nginx_these_tests_skip_but_fail_under_ci(monkeypatch):
    from tests.support import nginx

    monkeypatch.setattr(nginx, "nginx_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"install-system-deps\.sh"):
        nginx.require_nginx()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"install-system-deps\.sh"):
        nginx.require_nginx()
