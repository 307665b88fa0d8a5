"""How the CLI locates the control API (:func:`argbridge.commands.control_client.resolve`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from argbridge.commands.control_client import (
    SOCKET_BASE,
    Target,
    TargetError,
    add_arguments,
    resolve,
)


def parse(*argv: str, url_flag: str = "--url") -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, url_flag=url_flag)
    return parser.parse_args(list(argv))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("ARGBRIDGE_STATE_DIR", "ARGBRIDGE_CONTROL_TOKEN", "ARGBRIDGE_CONTROL__SOCKET"):
        monkeypatch.delenv(name, raising=False)


def test_default_is_the_socket_of_the_default_state_dir(monkeypatch):
    assert resolve(parse()) == Target(SOCKET_BASE, socket=Path("var/control.sock"))
    monkeypatch.setenv("ARGBRIDGE_STATE_DIR", "/srv/argbridge")
    assert resolve(parse()).socket == Path("/srv/argbridge/control.sock")
    assert resolve(parse("--state-dir", "/x")).socket == Path("/x/control.sock")
    assert resolve(parse("--socket", "/run/a.sock")).socket == Path("/run/a.sock")
    assert resolve(parse("--url", "unix:/run/b.sock")).socket == Path("/run/b.sock")


def test_config_gives_the_socket_without_reading_other_secrets(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text(
        'state_dir = "/var/lib/argbridge"\n'
        '[control]\nsocket = "ctl.sock"\ntoken = "credential:control-token"\n'
        '[sources.arga]\ntype = "arga"\napi_key = "credential:arga-api-key"\n'
    )
    target = resolve(parse("--config", str(config)))
    assert target.socket == Path("/var/lib/argbridge/ctl.sock") and target.token is None
    monkeypatch.setenv("ARGBRIDGE_STATE_DIR", "/srv/s")
    monkeypatch.setenv("ARGBRIDGE_CONTROL__SOCKET", "/run/argbridge.sock")
    assert resolve(parse("--config", str(config))).socket == Path("/run/argbridge.sock")
    config.write_text("[control]\nenabled = false\n")
    with pytest.raises(TargetError, match=r"control\.enabled is false"):
        resolve(parse("--config", str(config)))


def test_a_url_is_tcp_with_a_token_from_the_flag_env_or_config(tmp_path, monkeypatch):
    url = "http://127.0.0.1:8081"
    assert resolve(parse("--url", url + "/")) == Target(url)
    monkeypatch.setenv("T", "from-env-ref")
    assert resolve(parse("--url", url, "--token", "env:T")).token == "from-env-ref"
    monkeypatch.setenv("ARGBRIDGE_CONTROL_TOKEN", "from-env")
    assert resolve(parse("--daemon", url, url_flag="--daemon")).token == "from-env"
    monkeypatch.delenv("ARGBRIDGE_CONTROL_TOKEN")
    config = tmp_path / "c.toml"
    config.write_text('[control]\ntoken = "env:T"\n')
    target = resolve(parse("--config", str(config), "--url", url))
    assert target.base_url == url and target.token == "from-env-ref"
    assert "from-env-ref" not in repr(target)
    with pytest.raises(TargetError, match="--token: environment variable NOPE is not set"):
        resolve(parse("--url", url, "--token", "env:NOPE"))
