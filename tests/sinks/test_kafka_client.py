"""The Kafka connection keys: validation with errors naming the key, aiokafka's arguments
built from them, secrets kept out of repr. (Connections to real TLS/SASL listeners are in
test_kafka_security.py.)"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from argbridge.config import load_settings
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.errors import ConfigError
from argbridge.sinks import kafka_client
from tests.support.apache_kafka import make_tls


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tls(tmp_path_factory.mktemp("tls"))


def sink(**kw: Any) -> KafkaSinkConfig:
    return KafkaSinkConfig(type="kafka", **kw)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism, sasl_username, sasl_password"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
            "needs sasl_username, sasl_password",
        ),
        ({"sasl_username": "u"}, "sasl_username set, but security_protocol = 'PLAINTEXT'"),
        ({"ssl_cafile": "/etc/hosts"}, "ssl_cafile set, but security_protocol = 'PLAINTEXT'"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent.pem"}, "ssl_cafile: no such"),
        ({"security_protocol": "SSL", "ssl_keyfile": "/etc/hosts"}, "needs ssl_certfile"),
        (
            {"security_protocol": "SSL", "ssl_certfile": "/etc/hosts", "ssl_keyfile": "env:K"},
            "a private key is a file",
        ),
        ({"sasl_mechanism": "OAUTHBEARER", "security_protocol": "SASL_SSL"}, "sasl_mechanism"),
        ({"security_protocol": "TLS"}, "security_protocol"),
    ],
)
def test_errors_name_the_key(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, sinks={"k": {"type": "kafka", **keys}}, http={"enabled": False})
    assert message in str(info.value)


def test_plaintext_kwargs() -> None:
    kw = kafka_client.producer_kwargs(
        sink(bootstrap_servers=["a:1", "b:2"], acks=1, enable_idempotence=False)
    )
    assert kw["bootstrap_servers"] == ["a:1", "b:2"]
    assert kw["security_protocol"] == "PLAINTEXT" and kw["ssl_context"] is None
    assert "sasl_mechanism" not in kw and kw["acks"] == 1


def test_sasl_ssl_kwargs_and_secret_handling(tls: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_PW", "pw-from-env")
    cfg = sink(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password="env:KAFKA_PW",
        ssl_cafile=str(tls.ca),
    )
    assert "pw-from-env" not in repr(cfg) and "pw-from-env" not in str(cfg.model_dump())
    kw = kafka_client.producer_kwargs(cfg)
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "alice"
    assert kw["sasl_plain_password"] == "pw-from-env"
    context = kw["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    admin = kafka_client.admin_kwargs(cfg)
    assert admin["client_id"] == "argbridge-admin" and admin["sasl_plain_password"]


def test_mtls_key_from_a_credential_and_hostname_check_off(
    tls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(Path(tls.client_key).parent))
    cfg = sink(
        security_protocol="SSL",
        ssl_cafile=str(tls.ca),
        ssl_certfile=str(tls.client_cert),
        ssl_keyfile=f"credential:{Path(tls.client_key).name}",
        ssl_check_hostname=False,
    )
    assert cfg.ssl_keyfile == Path(tls.client_key)
    context = kafka_client.ssl_context(cfg)
    assert context is not None and not context.check_hostname


def test_describe_names_the_cause() -> None:
    import aiokafka.errors as errors

    exc = errors.KafkaConnectionError("Unable to bootstrap")
    exc.__cause__ = ConnectionRefusedError(111, "refused")
    assert kafka_client.describe(exc).startswith("connection refused")
    assert kafka_client.describe(errors.SaslAuthenticationFailed()).startswith(
        "authentication failed"
    )
    assert kafka_client.describe(TimeoutError()) == "timed out"
    assert kafka_client.kind(errors.TopicAuthorizationFailedError()) == "not authorized"
