"""Configuration of sinks: ``file``, ``kafka``, ``slack`` and ``webhook``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from argbridge.config.base import ByteSize, Duration, Secret, StrictModel


def _acks(value: Any) -> Any:
    # Environment overrides arrive as strings; -1 is Kafka's spelling of "all".
    if value in ("-1", -1):
        return "all"
    if isinstance(value, str) and value in ("0", "1"):
        return int(value)
    return value


class SinkBase(StrictModel):
    """What every sink has: batching from the journal and redelivery backoff."""

    batch_size: int = Field(default=500, ge=1, le=100_000)
    retry_initial: Duration = 0.5
    retry_max: Duration = 30.0


class FileSinkConfig(SinkBase):
    """JSON lines, one CloudEvent per line, rotated by size."""

    type: Literal["file"]
    path: Path = Path("events.jsonl")
    rotate_bytes: ByteSize = 64 * 1024 * 1024
    #: Rotated files kept besides the current one.
    keep: int = Field(default=5, ge=0)
    #: fsync after each batch (before the journal cursor moves).
    fsync: bool = True


class KafkaSinkConfig(SinkBase):
    """Kafka topics through aiokafka, CloudEvents Kafka binding."""

    type: Literal["kafka"]
    bootstrap_servers: str | list[str] = "127.0.0.1:9092"
    #: Topic (template with ``{type}``, ``{source}``, ``{subject}``…); a route may override.
    topic: str = "argbridge.events"
    acks: Annotated[Literal[0, 1, "all"], BeforeValidator(_acks)] = "all"
    mode: Literal["binary", "structured"] = "binary"
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "none"
    enable_idempotence: bool = False
    request_timeout: Duration = 30.0
    max_batch_bytes: ByteSize = 1024 * 1024
    max_in_flight: int = Field(default=4, ge=1)
    linger: Duration = 0.005
    client_id: str = "argbridge"


class SlackSinkConfig(SinkBase):
    """Slack via an incoming webhook URL or a bot token with chat.postMessage."""

    type: Literal["slack"]
    webhook_url: Secret | None = None
    bot_token: Secret | None = None
    channel: str | None = None
    api_base_url: str = "https://slack.com/api"
    #: Messages per second per channel (token bucket) and burst.
    rate: float = Field(default=1.0, gt=0)
    burst: int = Field(default=3, ge=1)
    #: Per-subject cooldown: coalesce a chatty run's events within this window.
    cooldown: Duration = 0.0
    dashboard_url: str | None = None


class WebhookSinkConfig(SinkBase):
    """Signed outbound webhooks (Standard Webhooks)."""

    type: Literal["webhook"]
    url: str
    #: Signing secrets (``whsec_…``); all sign each message (rotation).
    secrets: list[Secret] = Field(min_length=1)
    timeout: Duration = 15.0
    retry_schedule: list[Duration] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    #: Allow loopback/private/link-local destinations (SSRF guard off for this endpoint).
    allow_private: bool = False
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_cooldown: Duration = 30.0
