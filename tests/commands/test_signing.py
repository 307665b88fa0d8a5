"""``argbridge sign`` / ``argbridge verify``."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from argbridge.cli import main
from argbridge.signing import Verifier
from tests.support.webhooks import SECRET


@pytest.fixture
def body(tmp_path: Path) -> Path:
    p = tmp_path / "body.json"
    p.write_bytes(b'{"incident":{"id":"INC-1"}}')
    return p


def sign(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, str]:
    assert main(["sign", "--json", *args]) == 0
    headers: dict[str, str] = orjson.loads(capsys.readouterr().out)
    return headers


def test_sign_then_verify(capsys, body, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    headers = sign(capsys, "--secret", "env:HOOK_SECRET", "--id", "msg_9", str(body))
    assert headers["webhook-id"] == "msg_9"
    now = float(headers["webhook-timestamp"])
    Verifier("standard-webhooks", [SECRET]).verify(headers, body.read_bytes(), now)
    flags = [f"-H{k}: {v}" for k, v in headers.items()]
    assert main(["verify", "--secret", SECRET, *flags, str(body)]) == 0
    assert "OK (standard-webhooks); delivery id: msg_9" in capsys.readouterr().out
    body.write_bytes(b'{"tampered":1}')
    assert main(["verify", "--secret", SECRET, *flags, str(body)]) == 1
    out = capsys.readouterr().out
    assert "REJECTED" in out and "wrong secret, or the body was changed" in out
    assert SECRET not in out


def test_verify_explains_stale_and_missing(capsys, body):
    headers = sign(capsys, "--secret", SECRET, "--timestamp", "1000", str(body))
    flags = [f"-H{k}: {v}" for k, v in headers.items()]
    assert main(["verify", "--secret", SECRET, *flags, str(body)]) == 1
    assert "older than the tolerance" in capsys.readouterr().out
    assert main(["verify", "--secret", SECRET, *flags, "--now", "1000", str(body)]) == 0
    capsys.readouterr()
    assert main(["verify", "--secret", SECRET, str(body)]) == 1
    assert "missing" in capsys.readouterr().out


def test_hmac_and_slack_schemes(capsys, body):
    for scheme in ("hmac-sha256", "slack-v0"):
        headers = sign(capsys, "--scheme", scheme, "--secret", "plain", str(body))
        flags = [f"-H{k}: {v}" for k, v in headers.items()]
        assert main(["verify", "--scheme", scheme, "--secret", "plain", *flags, str(body)]) == 0
        capsys.readouterr()


def test_from_config_source(capsys, body, tmp_path: Path):
    cfg = tmp_path / "argbridge.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path}"\n'
        "[sources.gh]\n"
        'type = "webhook"\nscheme = "hmac-sha256"\n'
        f'secrets = ["gh-secret"]\nsignature_header = "X-Sig"\nid_header = "X-Id"\n'
    )
    headers = sign(capsys, "--config", str(cfg), "--source", "gh", str(body))
    assert list(headers) == ["X-Sig"]
    flags = [f"-H{k}: {v}" for k, v in headers.items()] + ["-HX-Id: d-1"]
    assert main(["verify", "-c", str(cfg), "--source", "gh", *flags, str(body)]) == 0
    assert "delivery id: d-1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["sign", "-c", str(cfg), "--source", "nope", str(body)])
    assert "(gh)" in str(info.value)
