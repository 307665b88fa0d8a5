"""The demo's daemon configuration (built in code) and its TOML rendering."""

from __future__ import annotations

import tomllib
from pathlib import Path

from argbridge.cli import main
from argbridge.demo.config import DemoPlan, demo_config, demo_settings, new_secret, render_toml
from argbridge.signing import decode_secret


def plan(tmp_path: Path, kafka: str | None = "127.0.0.1:9") -> DemoPlan:
    return DemoPlan(
        state_dir=tmp_path,
        argus_secret=new_secret(),
        receiver_url="http://127.0.0.1:1/hook",
        receiver_secret=new_secret(),
        slack_url="http://127.0.0.1:2/services/T/B/x",
        kafka_bootstrap=kafka,
    )


def test_settings_with_and_without_kafka(tmp_path):
    s = demo_settings(plan(tmp_path))
    assert {n: c.type for n, c in s.sources.items()} == {"arga": "arga", "argus": "argus-webhook"}
    assert list(s.sinks) == ["file", "kafka", "slack", "webhook"]
    assert s.routes[0].sinks == ["file", "kafka", "webhook"]
    assert s.routes[1].sinks == ["slack"]
    assert s.http.port == 0 and s.http.host == "127.0.0.1"
    webhook = s.sinks["webhook"]
    assert webhook.type == "webhook" and webhook.allow_private
    s = demo_settings(plan(tmp_path, kafka=None))
    assert list(s.sinks) == ["file", "slack", "webhook"]
    assert s.routes[0].sinks == ["file", "webhook"]


def test_secrets_are_fresh_standard_webhooks_keys():
    a, b = new_secret(), new_secret()
    assert a != b and a.startswith("whsec_")
    assert len(decode_secret("standard-webhooks", a)) == 24


def test_toml_rendering_round_trips_and_masks(tmp_path):
    p = plan(tmp_path)
    config = demo_config(p)
    text = render_toml(config)
    assert tomllib.loads(text) == config
    masked = render_toml(config, mask=(p.argus_secret, p.receiver_secret))
    assert p.argus_secret not in masked and p.receiver_secret not in masked
    assert tomllib.loads(masked)["sources"]["argus"]["secrets"] == ["**********"]


def test_print_config_command(tmp_path, capsys):
    assert main(["demo", "--print-config", "--state-dir", str(tmp_path), "--no-kafka"]) == 0
    out = capsys.readouterr().out
    parsed = tomllib.loads(out)
    assert "kafka" not in parsed["sinks"] and parsed["sinks"]["webhook"]["allow_private"]
    assert "whsec_" not in out
