"""The systemd unit and its config example agree with each other and with the package."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from argbridge.config.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "argbridge.service"
CONFIG = ROOT / "config" / "argbridge.systemd.toml"


def credential_refs() -> set[str]:
    """Every ``credential:NAME`` value in the example config."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, str) and node.startswith("credential:"):
            found.add(node.removeprefix("credential:"))
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tomllib.loads(CONFIG.read_text()))
    return found


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → every value (systemd allows repeated keys; no continuations here)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        assert not line.endswith("\\"), "line continuations are not expected"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    """A systemd time span (the forms the unit uses)."""
    total = 0.0
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values, f"{key}= missing from {UNIT.name}"
    return values[-1]


def test_type_notify_restart_and_watchdog(service):
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert one(service, "Restart") == "on-failure"
    assert seconds(one(service, "WatchdogSec")) >= 10


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DynamicUser", "yes"),
        ("StateDirectory", "argbridge"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("LockPersonality", "yes"),
        ("UMask", "0077"),
        ("CapabilityBoundingSet", ""),
    ],
)
def test_hardening(service, key, value):
    assert one(service, key) == value


def test_address_families_and_syscall_filter(service):
    families = set(one(service, "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "@system-service" in service["SystemCallFilter"][0].split()


def test_secrets_only_through_credentials(service):
    for env in service.get("Environment", []):
        assert not re.search(r"token|secret|key|password", env, re.I), env
    loaded = {v.split(":", 1)[0] for v in service["LoadCredential"]}
    referenced = credential_refs()
    assert referenced, "the example config should read its secrets from credentials"
    assert referenced <= loaded, f"credentials used but not loaded: {referenced - loaded}"


def test_exec_start_runs_the_documented_config(service):
    argv = shlex.split(one(service, "ExecStart"))
    assert Path(argv[0]).name == "argbridge"
    assert argv[1:] == ["run", "--config", "/etc/argbridge/argbridge.toml"]


def credential_value(name: str) -> str:
    # Webhook signing secrets are validated as base64 (whsec_...); others are opaque.
    return "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" if "webhook" in name else f"value-of-{name}"


def test_state_dir_is_the_state_directory(service, monkeypatch, tmp_path):
    data = tomllib.loads(CONFIG.read_text())
    assert data["state_dir"] == "/var/lib/argbridge"
    assert "ARGBRIDGE_STATE_DIR=%S/argbridge" in service["Environment"]
    # The unit's environment override wins over the file, as under systemd.
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in credential_refs():
        (creds / name).write_text(credential_value(name) + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("ARGBRIDGE_STATE_DIR", str(tmp_path / "state"))
    settings = load_settings(CONFIG)
    assert settings.state_dir == tmp_path / "state"
    # The control API is the socket in the state directory, not a TCP port; /metrics has
    # its own loopback port; the public listener serves webhooks and health only.
    control = settings.control
    assert control.enabled and control.port is None
    assert control.socket_path(settings.state_dir) == tmp_path / "state" / "control.sock"
    assert settings.metrics.listener == "own" and settings.metrics.host == "127.0.0.1"
    assert "AF_UNIX" in one(service, "RestrictAddressFamilies").split()


def test_timeout_stop_covers_the_graceful_stop(service, monkeypatch, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in credential_refs():
        (creds / name).write_text(credential_value(name))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = load_settings(CONFIG)
    rt = settings.runtime
    # drain, then each sink's close (bounded by drain_timeout, one after the other),
    # and the HTTP server's graceful shutdown (+1 s uvicorn margin).
    worst = rt.drain_timeout * (1 + len(settings.sinks)) + settings.http.shutdown_timeout + 1
    assert seconds(one(service, "TimeoutStopSec")) > worst


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_and_security(tmp_path):
    # verify wants ExecStart's binary to exist: point it at one that does.
    unit = tmp_path / "argbridge.service"
    true = shutil.which("true") or "/bin/true"
    unit.write_text(UNIT.read_text().replace("/opt/argbridge/bin/argbridge", true))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30
    )
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if security.returncode != 0 and "offline" in security.stderr:
        pytest.skip("systemd-analyze too old for --offline")
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert match, security.stdout[-500:] + security.stderr
    assert float(match.group(1)) <= 2.0  # "OK" band; the unit scores 1.5 with systemd 252
