"""How argbridge connects to Kafka: the keys shared by every Kafka client it builds.

Owns :class:`KafkaClientConfig`, the connection part of a Kafka sink's configuration
(bootstrap servers, client id, TLS and SASL, the request timeout), named as aiokafka names
its arguments: ``security_protocol`` (``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``,
``SASL_SSL``), ``sasl_mechanism`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``),
``sasl_username``, ``sasl_password``, ``ssl_cafile``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_password`` and ``ssl_check_hostname`` (on by default). Passwords are secret
references (``env:``/``file:``/``credential:``); the private key is a file, named by a
path, ``file:PATH`` or ``credential:NAME`` (systemd ``LoadCredential=``): only its path
is ever kept, never its contents. :mod:`argbridge.sinks.kafka_client` turns this into
aiokafka's arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, model_validator

from argbridge.config.base import Duration, Secret, StrictModel

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _key_path(value: Any) -> Any:
    """A private key's file: a path, ``file:PATH`` or ``credential:NAME``."""
    if not isinstance(value, str):
        return value
    if value.startswith("file:"):
        return value[5:]
    if value.startswith("credential:"):
        name = value[len("credential:") :]
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ValueError(
                f"credential:{name} needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=)"
            )
        return str(Path(directory) / name)
    if value.startswith("env:"):
        raise ValueError("a private key is a file: use a path, file:PATH or credential:NAME")
    return value


KeyFile = Annotated[Path, BeforeValidator(_key_path)]


class KafkaClientConfig(StrictModel):
    """Where the brokers are and how to authenticate to them."""

    bootstrap_servers: str | list[str] = "127.0.0.1:9092"
    client_id: str = "argbridge"
    #: Bound on one request to a broker (aiokafka's ``request_timeout_ms``).
    request_timeout: Duration = 30.0
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    #: CA certificates (PEM) that signed the brokers' certificates; the system's when unset.
    ssl_cafile: Path | None = None
    #: Client certificate (PEM, with its chain) for mutual TLS; its key in ``ssl_keyfile``
    #: (or in this same file).
    ssl_certfile: Path | None = None
    ssl_keyfile: KeyFile | None = None
    #: Password of an encrypted ``ssl_keyfile``.
    ssl_password: Secret | None = None
    #: Check that the broker's certificate names the host connected to.
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _security(self) -> KafkaClientConfig:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if sasl:
            missing = [
                key
                for key in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, key) is None
            ]
            if missing:
                raise ValueError(
                    f"security_protocol = {self.security_protocol!r} needs {', '.join(missing)}"
                )
        else:
            given = [
                key
                for key in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, key) is not None
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)} set, but security_protocol = "
                    f"{self.security_protocol!r} does not use SASL (SASL_SSL or SASL_PLAINTEXT)"
                )
        tls_keys = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")
        if not tls:
            given = [key for key in tls_keys if getattr(self, key) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} set, but security_protocol = "
                    f"{self.security_protocol!r} does not use TLS (SSL or SASL_SSL)"
                )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile (the client certificate)")
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, key)
            if path is not None and not path.is_file():
                raise ValueError(f"{key}: no such file: {path}")
        return self

    def servers(self) -> str:
        """The bootstrap servers as one comma-separated string (for messages)."""
        s = self.bootstrap_servers
        return s if isinstance(s, str) else ",".join(s)
