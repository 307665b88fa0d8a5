"""Configuration: TOML + env, key-path errors, secrets that never print."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from argbridge.config import load_settings
from argbridge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "argbridge.toml"
    p.write_text(text)
    return p


def problems(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return dict(info.value.problems)


def test_every_error_is_reported_with_its_key_path(tmp_path):
    path = write(
        tmp_path,
        """
bogus = 1
[journal]
max_backlog_events = 0
[sinks.kafka]
type = "kafka"
acks = 2
[sinks.w]
type = "wat"
[sources.r]
type = "replay"
interval = "5 parsecs"
[[routes]]
sinks = ["nope"]
filters = [{ prefix = { type = "a" }, exact = { type = "b" } }]
""",
    )
    found = problems(path)
    assert found["sinks.kafka.acks"] == "must be one of 0, 1, all"
    assert found["bogus"] == "unknown key"
    assert found["journal.max_backlog_events"].startswith("Input should be greater than")
    assert found["sinks.w"].startswith("unknown type 'wat'; must be one of file, kafka")
    assert found["sources.r.interval"].startswith("must be a duration")
    assert found["routes.0.sinks.0"].startswith("no sink named 'nope'")
    assert "exactly one of" in found["routes.0.filters.0"]


def test_unknown_nested_key_is_an_error(tmp_path):
    path = write(tmp_path, '[sinks.f]\ntype = "file"\npaht = "typo.jsonl"\n')
    assert problems(path) == {"sinks.f.paht": "unknown key"}


def test_missing_required_key(tmp_path):
    path = write(tmp_path, '[sinks.w]\ntype = "webhook"\nsecrets = ["whsec_x"]\n')
    assert problems(path) == {"sinks.w.url": "required key is missing"}


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "x = = 1"))


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, '[sinks.kafka]\ntype = "kafka"\n[journal]\nmax_backlog_events = 10\n')
    monkeypatch.setenv("ARGBRIDGE_SINKS__KAFKA__ACKS", "1")
    monkeypatch.setenv("ARGBRIDGE_SINKS__KAFKA__ENABLE_IDEMPOTENCE", "false")
    monkeypatch.setenv("ARGBRIDGE_JOURNAL__MAX_BACKLOG_EVENTS", "42")
    monkeypatch.setenv("ARGBRIDGE_STATE_DIR", str(tmp_path / "s"))
    s = load_settings(path)
    assert s.sinks["kafka"].acks == 1  # type: ignore[union-attr]
    assert s.journal.max_backlog_events == 42
    assert s.state_dir == tmp_path / "s"


def test_environment_errors_have_key_paths_too(tmp_path, monkeypatch):
    path = write(tmp_path, '[sinks.kafka]\ntype = "kafka"\n')
    monkeypatch.setenv("ARGBRIDGE_SINKS__KAFKA__ACKS", "7")
    assert problems(path) == {"sinks.kafka.acks": "must be one of 0, 1, all"}


def test_durations_and_sizes(tmp_path):
    path = write(
        tmp_path,
        '[runtime]\ndrain_timeout = "1500ms"\n[journal]\nmax_backlog_bytes = "2MiB"\n'
        'retain_delivered = "2h"\n',
    )
    s = load_settings(path)
    assert s.runtime.drain_timeout == 1.5
    assert s.journal.max_backlog_bytes == 2 * 1024 * 1024
    assert s.journal.retain_delivered == 7200


def test_gc_thresholds_default_and_errors(tmp_path):
    assert load_settings(write(tmp_path, "")).runtime.gc_thresholds == (700, 10, 10)
    path = write(tmp_path, "[runtime]\ngc_thresholds = [1000, 10, 10]\n")
    assert load_settings(path).runtime.gc_thresholds == (1000, 10, 10)
    path = write(tmp_path, "[runtime]\ngc_thresholds = [0, 10, 10]\n")
    assert list(problems(path)) == ["runtime.gc_thresholds.0"]
    path = write(tmp_path, "[runtime]\ngc_thresholds = [1000, 10]\n")
    assert list(problems(path)) == ["runtime.gc_thresholds.2"]


def test_journal_compression_default_and_errors(tmp_path):
    assert load_settings(write(tmp_path, "")).journal.compression == "snappy"
    path = write(tmp_path, '[journal]\ncompression = "none"\n')
    assert load_settings(path).journal.compression == "none"
    path = write(tmp_path, '[journal]\ncompression = "zstd"\n')
    assert list(problems(path)) == ["journal.compression"]


def test_malloc_thresholds(tmp_path):
    runtime = load_settings(write(tmp_path, "")).runtime
    assert (runtime.malloc_trim_threshold, runtime.malloc_mmap_threshold) == (0, 0)  # glibc's
    path = write(
        tmp_path, '[runtime]\nmalloc_trim_threshold = "32MiB"\nmalloc_mmap_threshold = "8MiB"\n'
    )
    runtime = load_settings(path).runtime
    assert (runtime.malloc_trim_threshold, runtime.malloc_mmap_threshold) == (32 << 20, 8 << 20)
    path = write(tmp_path, '[runtime]\nmalloc_mmap_threshold = "64MiB"\n')
    assert list(problems(path)) == ["runtime.malloc_mmap_threshold"]  # glibc's cap: 32 MiB


SECRET = "s3cr3t-value-that-must-not-leak"


def test_secret_references_resolve_and_never_print(tmp_path, monkeypatch):
    (tmp_path / "hook.key").write_text(SECRET + "-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "slack").write_text(SECRET + "-cred")
    monkeypatch.setenv("HOOK_SECRET", SECRET + "-env")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = write(
        tmp_path,
        f"""
[sinks.w]
type = "webhook"
url = "https://example.com/hook"
secrets = ["env:HOOK_SECRET", "file:{tmp_path / "hook.key"}", "{SECRET}-literal"]
[sinks.s]
type = "slack"
webhook_url = "credential:slack"
""",
    )
    s = load_settings(path)
    w = s.sinks["w"]
    values = [x.get_secret_value() for x in w.secrets]  # type: ignore[union-attr]
    assert values == [SECRET + "-env", SECRET + "-file", SECRET + "-literal"]
    assert s.sinks["s"].webhook_url.get_secret_value() == SECRET + "-cred"  # type: ignore[union-attr]
    for text in (repr(s), str(s), s.model_dump_json()):
        assert SECRET not in text


def test_secret_errors_name_the_reference_not_the_value(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = write(
        tmp_path,
        f"""
[sinks.w]
type = "webhook"
url = "https://example.com/hook"
secrets = ["env:NOPE", "file:{tmp_path}/missing.key", "credential:x"]
timeout = "{SECRET}"
""",
    )
    found = problems(path)
    assert found["sinks.w.secrets.0"] == "environment variable NOPE is not set"
    assert "cannot read secret file" in found["sinks.w.secrets.1"]
    assert "CREDENTIALS_DIRECTORY" in found["sinks.w.secrets.2"]
    assert all(SECRET not in msg for msg in found.values())


EXAMPLE_SECRETS = (
    "ARGA_API_KEY",
    "ARGUS_WEBHOOK_SECRET",
    "DEPLOY_WEBHOOK_SECRET",
    "SLACK_WEBHOOK_URL",
    "OUTBOUND_WEBHOOK_SECRET",
    "ARGUS_E2E_API_KEY",
    "ARGOS_CI_TOKEN",
    "ARGOS_OMNI_API_KEY",
    "DEPLOY_STREAM_TOKEN",
    "FEED_TOKEN",
    "TICKETS_API_KEY",
)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "argbridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_check_config_cli_prints_every_error_and_fails(tmp_path):
    path = write(tmp_path, f'[sinks.kafka]\ntype = "kafka"\nacks = "{SECRET}"\nbogus = 1\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert "sinks.kafka.acks: must be one of 0, 1, all" in result.stderr
    assert "sinks.kafka.bogus: unknown key" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_check_config_accepts_the_shipped_configs():
    for name in ("default.toml", "argbridge.toml"):
        result = run_cli(
            "check-config",
            str(REPO / "config" / name),
            env={
                **dict.fromkeys(EXAMPLE_SECRETS, "placeholder-secret"),
                "ARGUS_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "OUTBOUND_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            },
        )
        assert result.returncode == 0, result.stderr
        assert "OK" in result.stdout


def test_version_cli():
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.startswith("argbridge ")


def _field_names(model: type, seen: set[type] | None = None) -> set[str]:
    """Every field name in a model tree (following nested models and unions)."""
    import types
    import typing

    from pydantic import BaseModel

    seen = seen or set()
    names: set[str] = set()
    if model in seen:
        return names
    seen.add(model)
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        names.add(field.alias or name)
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                names |= _field_names(tp, seen)
            elif isinstance(tp, types.UnionType) or typing.get_origin(tp) is not None:
                stack.extend(typing.get_args(tp))
    return names


def test_the_example_config_documents_every_option():
    from argbridge.config.settings import Settings

    text = (REPO / "config" / "argbridge.toml").read_text()
    missing = sorted(
        name
        for name in _field_names(Settings)
        if f"{name} =" not in text and f"[{name}" not in text and f".{name}]" not in text
    )
    # FilterConfig dialects appear inside inline tables.
    missing = [m for m in missing if m not in {"exact", "prefix", "suffix", "all", "any", "not"}]
    assert missing == [], f"config/argbridge.toml does not document: {missing}"
