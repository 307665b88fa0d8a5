"""The Benthos peer benchmark's generated configs and build pin, checked without Go: the
configs are valid YAML with the components and keys the benchmark relies on, the secret
stays out of them, and the build script builds the version go.mod pins."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from bench.bench_peers import BUILD_SCRIPT, WEBHOOK_PATH, dump, webhook_config, websocket_config
from bench.bench_webhooks import SECRET

PEER_DIR = BUILD_SCRIPT.parent / "benthos"


def roundtrip(config: dict[str, Any]) -> dict[str, Any]:
    text = dump(config)
    loaded = yaml.safe_load(text)
    assert loaded == config
    assert SECRET not in text and SECRET.removeprefix("whsec_") not in text
    return loaded  # type: ignore[no-any-return]


def mappings(config: dict[str, Any]) -> list[str]:
    """Every Bloblang mapping of the pipeline, switch cases included, in order."""
    found: list[str] = []

    def walk(processors: list[dict[str, Any]]) -> None:
        for proc in processors:
            if "mapping" in proc:
                found.append(proc["mapping"])
            for case in proc.get("switch", []):
                walk(case["processors"])

    walk(config["pipeline"]["processors"])
    return found


def test_the_webhook_config_verifies_standard_webhooks_then_writes_a_file(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    config = roundtrip(webhook_config(18080, out))
    server = config["input"]["http_server"]
    assert server["address"] == "127.0.0.1:18080"
    assert server["path"] == WEBHOOK_PATH
    assert server["allowed_verbs"] == ["POST"]
    assert "@status" in server["sync_response"]["status"]
    assert config["output"] == {"file": {"path": str(out), "codec": "lines"}}
    assert config["http"] == {"enabled": False}
    verify, reject, event, bad_body = (m for m in mappings(config) if m != "root = deleted()")
    for needle in (
        'metadata("Webhook-Id")',
        'metadata("Webhook-Timestamp")',
        'metadata("Webhook-Signature")',
        'env("WEBHOOK_SECRET").trim_prefix("whsec_").decode("base64")',
        '$id + "." + $ts + "." + content().string()',
        'hash("hmac_sha256", $key).encode("base64")',
        '.split(" ").contains($expected)',
        'meta status = "401"',
        "$age <= 300",
    ):
        assert needle in verify, needle
    assert "@reason" in reject
    assert 'root.specversion = "1.0"' in event
    assert 'meta status = "400"' in bad_body
    # Each rejection answers through sync_response and is then dropped, never written.
    for case in (p["switch"][0] for p in config["pipeline"]["processors"] if "switch" in p):
        assert [next(iter(p)) for p in case["processors"]] == [
            "mapping",
            "sync_response",
            "mapping",
        ]
        assert case["processors"][-1]["mapping"] == "root = deleted()"


def test_the_floor_config_has_no_check(tmp_path: Path) -> None:
    config = roundtrip(webhook_config(18081, tmp_path / "floor.jsonl", verify=False))
    assert config["pipeline"]["processors"] == []
    assert "sync_response" not in config["input"]["http_server"]


def test_the_websocket_config_maps_each_frame_to_a_line(tmp_path: Path) -> None:
    url = "ws://127.0.0.1:18090/demo-runner/runs/ws-1/stream?token=t"
    config = roundtrip(websocket_config(url, "ws-1", tmp_path / "ws.jsonl"))
    assert config["input"] == {"websocket": {"url": url}}
    assert config["output"]["file"]["codec"] == "lines"
    (mapping,) = mappings(config)
    assert 'root.subject = "ws-1"' in mapping and "RUN_ID" not in mapping


def test_the_build_script_builds_the_version_go_mod_pins() -> None:
    subprocess.run(["sh", "-n", str(BUILD_SCRIPT)], check=True)
    script = re.search(r"^VERSION=(v\S+)", BUILD_SCRIPT.read_text(), re.M)
    pin = re.search(
        r"^require github.com/redpanda-data/benthos/v4 (v\S+)$",
        (PEER_DIR / "go.mod").read_text(),
        re.M,
    )
    assert script and pin and script.group(1) == pin.group(1)
    assert f"github.com/redpanda-data/benthos/v4 {pin.group(1)} h1:" in (
        (PEER_DIR / "go.sum").read_text()
    )
    assert "github.com/redpanda-data/connect" not in (PEER_DIR / "go.mod").read_text()
