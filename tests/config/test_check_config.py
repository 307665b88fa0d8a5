"""``argbridge check-config`` catches what start would hit (issue 11 item 4), run as the
real command: unknown topic-template attributes, every error of a section in one run,
``--no-environment`` for CI, and the endpoints the config opens (also logged at start)."""

from __future__ import annotations

from pathlib import Path

import pytest

from argbridge.config import load_settings
from argbridge.config.base import UnresolvedSecret, unresolved_secrets
from argbridge.config.endpoints import endpoints
from argbridge.errors import ConfigError
from tests.conftest import free_port
from tests.support.process import Daemon, run_cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_SECRETS = (
    "ARGA_API_KEY",
    "ARGUS_WEBHOOK_SECRET",
    "DEPLOY_WEBHOOK_SECRET",
    "SLACK_WEBHOOK_URL",
    "OUTBOUND_WEBHOOK_SECRET",
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_unknown_topic_template_attributes_are_errors_with_the_key_path(tmp_path: Path):
    path = _write(
        tmp_path,
        '[sinks.k]\ntype = "kafka"\ntopic = "events.{nosuchattr}"\n'
        '[[routes]]\nsinks = ["k"]\ntopic = "x.{type}.{bogus}"\n'
        '[[routes]]\nsinks = ["k"]\ntopic = "ok.{type}.{subject}.{traceparent}"\n',
    )
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert (
        "sinks.k.topic: topic template 'events.{nosuchattr}': unknown attribute {nosuchattr}"
        in (result.stderr)
    )
    assert "routes.0.topic: topic template 'x.{type}.{bogus}': unknown attribute {bogus}" in (
        result.stderr
    )
    assert "routes.1" not in result.stderr


def test_every_error_of_a_section_is_reported_in_one_run(tmp_path: Path):
    path = _write(
        tmp_path,
        '[sources.arga]\ntype = "arga"\nbase_url = "api.argalabs.com"\nmax_streams = 0\n'
        '[sinks.s]\ntype = "slack"\nrate = -1\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    found = dict(info.value.problems)
    assert found["sources.arga.base_url"] == "must start with http:// or https://"
    assert "sources.arga.max_streams" in found
    assert found["sources.arga.api_key"] == "required unless simulate.enabled is true"
    assert "sinks.s.rate" in found
    assert found["sinks.s"] == "set exactly one of webhook_url or bot_token"


def test_no_environment_checks_the_example_without_its_secrets():
    example = str(REPO / "config" / "argbridge.toml")
    plain = run_cli("check-config", example, unset=EXAMPLE_SECRETS)
    assert plain.returncode == 1
    assert "environment variable ARGA_API_KEY is not set" in plain.stderr

    checked = run_cli("check-config", "--no-environment", example, unset=EXAMPLE_SECRETS)
    assert checked.returncode == 0, checked.stderr
    assert "OK" in checked.stdout
    assert "were not resolved" in checked.stdout
    assert "POST http://127.0.0.1:8080/webhooks/argus" in checked.stdout
    assert "POST http://127.0.0.1:8080/webhooks/deploys" in checked.stdout


def test_no_environment_still_reports_every_other_error(tmp_path: Path):
    path = _write(
        tmp_path,
        '[sources.hook]\ntype = "argus-webhook"\nsecrets = ["env:NOT_SET_ANYWHERE", "env:"]\n'
        'tolerance = "bogus"\n'
        '[sinks.h]\ntype = "webhook"\nurl = "ftp://x"\nsecrets = ["file:/nonexistent/secret"]\n',
    )
    result = run_cli("check-config", "--no-environment", str(path))
    assert result.returncode == 1
    assert "sources.hook.secrets.1: the reference env: needs a name" in result.stderr
    assert "sources.hook.tolerance" in result.stderr
    assert "sinks.h.url" in result.stderr
    assert "NOT_SET_ANYWHERE" not in result.stderr
    assert "/nonexistent/secret" not in result.stderr


def test_unresolved_secrets_are_not_read_and_print_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("H11_SECRET", "s3cr3t-value")
    path = _write(tmp_path, '[sinks.s]\ntype = "slack"\nwebhook_url = "env:H11_SECRET"\n')
    with unresolved_secrets():
        s = load_settings(path)
    url = s.sinks["s"].webhook_url  # type: ignore[union-attr]
    assert isinstance(url, UnresolvedSecret)
    assert url.reference == "env:H11_SECRET"
    assert "s3cr3t" not in repr(s)
    # Outside the block, references resolve again.
    assert load_settings(path).sinks["s"].webhook_url.get_secret_value() == "s3cr3t-value"  # type: ignore[union-attr]


def test_endpoints_of_a_config(tmp_path: Path):
    s = load_settings(
        None,
        state_dir=str(tmp_path),
        http={"host": "127.0.0.1", "port": 9000},
        sources={"argus": {"type": "argus-webhook", "secrets": ["k"], "scheme": "hmac-sha256"}},
    )
    assert (
        endpoints(s)[0]
        == "POST http://127.0.0.1:9000/webhooks/argus  (argus-webhook source 'argus')"
    )
    assert any("/readyz" in line for line in endpoints(s))
    # /metrics is not on the public listener by default: it is on the control socket.
    assert not any(line.startswith("GET  http://127.0.0.1:9000/metrics") for line in endpoints(s))
    assert any("control.sock /control/" in line for line in endpoints(s))
    off = load_settings(None, state_dir=str(tmp_path), http={"enabled": False})
    assert not any("/webhooks/" in line or "/readyz" in line for line in endpoints(off))
    both_off = load_settings(
        None,
        state_dir=str(tmp_path),
        http={"enabled": False},
        control={"enabled": False},
        metrics={"listener": "off"},
    )
    assert endpoints(both_off) == []


@pytest.mark.slow
def test_the_daemon_logs_its_endpoints_at_start(tmp_path: Path):
    port = free_port()
    path = _write(
        tmp_path,
        f'state_dir = "{tmp_path / "state"}"\n[log]\nformat = "json"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
        '[sources.deploys]\ntype = "webhook"\nscheme = "hmac-sha256"\nsecrets = ["k"]\n'
        '[sinks.file]\ntype = "file"\n',
    )
    with Daemon(path) as daemon:
        line = daemon.wait_event("daemon.endpoints")
        assert (
            f"POST http://127.0.0.1:{port}/webhooks/deploys  (webhook source 'deploys')"
            in (line["endpoints"])
        )
        daemon.wait_event("daemon.ready")
        assert daemon.stop() == 0


def test_cross_field_checks_are_reported_with_the_field_errors(tmp_path: Path):
    path = _write(
        tmp_path,
        '[sinks.k]\ntype = "kafka"\nrequest_timeout = "90s"\nmax_in_flight = 0\n'
        '[sources.w]\ntype = "argus-webhook"\nsecrets = ["k"]\nid_header = "X-Id"\n'
        'tolerance = "bogus"\n'
        '[sources.a]\ntype = "arga"\napi_key = "k"\nread_timeout = "5s"\nmax_streams = 0\n'
        '[sources.a.simulate]\nheartbeat = "10s"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    found = info.value.problems
    assert ("sinks.k", "call_timeout must be larger than request_timeout") in found
    assert "sinks.k.max_in_flight" in dict(found)
    assert ("sources.w.id_header", dict(found)["sources.w.id_header"]) in found
    assert "sources.w.tolerance" in dict(found)
    assert ("sources.a", "read_timeout must exceed simulate.heartbeat (idle streams)") in found
    assert "sources.a.max_streams" in dict(found)
    # Without field errors each check is reported once (by the model's own validator).
    ok = _write(tmp_path, '[sinks.k]\ntype = "kafka"\nrequest_timeout = "90s"\n')
    with pytest.raises(ConfigError) as once:
        load_settings(ok)
    assert once.value.problems == [("sinks.k", "call_timeout must be larger than request_timeout")]
