"""Config of the generic sources: expressions checked at load, unknown keys, secrets."""

from __future__ import annotations

import subprocess
import sys

import pytest

from argbridge.config.settings import load_settings
from argbridge.errors import ConfigError


def errors(**source) -> str:
    with pytest.raises(ConfigError) as exc:
        load_settings(None, sources={"s": source})
    return str(exc.value)


def test_bad_expressions_are_reported_at_their_key():
    msg = errors(type="sse", url="http://x/s", mapping={"subject": "a.[b"})
    assert "sources.s.mapping.subject" in msg and "invalid JMESPath" in msg
    msg = errors(type="sse", url="http://x/s", mapping={"data": {"n": "f("}})
    assert "sources.s.mapping.data.n" in msg
    msg = errors(type="poll", url="http://x/i", change_marker="[")
    assert "sources.s.change_marker" in msg
    msg = errors(type="websocket", url="ws://x/f", terminal="==")
    assert "sources.s.terminal" in msg


def test_unknown_keys_and_shapes():
    assert "sources.s.colour: unknown key" in errors(type="poll", url="http://x", colour=1)
    assert "sources.s.url" in errors(type="websocket", url="http://x")
    assert "sources.s.body" in errors(type="sse", url="http://x", body={"a": 1})
    assert "sources.s.auth.name" in errors(
        type="sse", url="http://x", auth={"type": "header", "secret": "s"}
    )
    assert "sources.s.url" in errors(type="sse", url="http://x/{run_id}")


def test_secret_references_are_resolved_and_never_printed(monkeypatch):
    monkeypatch.setenv("K", "hunter2-secret")
    s = load_settings(
        None,
        sources={
            "s": {"type": "sse", "url": "http://x", "auth": {"type": "bearer", "secret": "env:K"}}
        },
    )
    auth = s.sources["s"].auth  # type: ignore[union-attr]
    assert auth is not None and auth.secret.get_secret_value() == "hunter2-secret"
    assert "hunter2" not in repr(s)
    assert "UNSET_VAR" in errors(
        type="sse", url="http://x", auth={"type": "bearer", "secret": "env:UNSET_VAR"}
    )


def test_check_config_rejects_a_bad_expression(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sources.s]\ntype = "poll"\nurl = "http://x/i"\nitem_id = "a.["\n')
    out = subprocess.run(
        [sys.executable, "-m", "argbridge", "check-config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "sources.s.item_id" in out.stdout + out.stderr


def test_profiles_are_checked_with_their_expansion():
    assert "sources.s.api_key: set exactly one" in errors(type="argus-e2e", run_id="r")
    assert "sources.s.run_id" in errors(type="argus-e2e", api_key="k")
    # A large max_event_bytes raises the expansion's memory bound with it.
    load_settings(
        None,
        sources={
            "s": {"type": "argus-e2e", "api_key": "k", "run_id": "r", "max_event_bytes": "64MiB"}
        },
    )
    assert "sources.s.workflow_id" in errors(type="argos-omni", api_key="k", workflow_id="a/b")
    assert "sources.s.token: required key is missing" in errors(type="argos-ci")
    s = load_settings(
        None,
        sources={"o": {"type": "argos-omni", "api_key": "k", "workflow_id": "it's"}},
    )
    assert s.sources["o"].type == "argos-omni"
