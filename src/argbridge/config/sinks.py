"""Configuration of sinks: ``file``, ``kafka``, ``slack`` and ``webhook``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    field_validator,
    model_validator,
)

from argbridge.config.base import (
    ByteSize,
    Duration,
    RawProblem,
    Secret,
    StrictModel,
    raw_duration,
    supplement_field_errors,
    validate_with_raw_checks,
)
from argbridge.config.kafka import KafkaClientConfig


def _acks(value: Any) -> Any:
    # Environment overrides arrive as strings; -1 is Kafka's spelling of "all".
    if value in ("-1", -1):
        return "all"
    if isinstance(value, str) and value in ("0", "1"):
        return int(value)
    return value


#: ``batch_size`` of a Kafka sink with ``delivery = "exactly-once"`` unless set: events per
#: transaction at most (bench_eos: 500 gave 64–69% of at-least-once, 2,000 113–129%).
EXACTLY_ONCE_BATCH_SIZE = 2000


class SinkBase(StrictModel):
    """What every sink has: batching from the journal and redelivery backoff."""

    batch_size: int = Field(default=500, ge=1, le=100_000)
    #: A batch read from the journal also stops at this many bytes (at least one event).
    batch_bytes: ByteSize = Field(default=4 * 1024 * 1024, ge=1)
    #: Once caught up, wait this long after a new event before reading: the events of the
    #: next few ms share one delivery and one cursor commit (CPU at moderate load; 0: off).
    #: 10 ms keeps a Kafka sink's commit -> ack p99 under 25 ms at 100-2,000 events/s
    #: with the default journal.group_linger; 15 ms did not (bench_bounds --phase cpu).
    read_linger: Duration = 0.010
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


class KafkaSinkConfig(SinkBase, KafkaClientConfig):
    """Kafka topics through aiokafka, CloudEvents Kafka binding (the connection keys,
    TLS and SASL included, come from :class:`KafkaClientConfig`)."""

    type: Literal["kafka"]
    #: Topic (template with ``{type}``, ``{source}``, ``{subject}``…); a route may override.
    topic: str = "argbridge.events"
    acks: Annotated[Literal[0, 1, "all"], BeforeValidator(_acks)] = "all"
    mode: Literal["binary", "structured"] = "binary"
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "none"
    #: The broker drops a batch it already has (producer retries never duplicate);
    #: needs ``acks = "all"``. Off only for brokers that cannot do it (Tansu).
    enable_idempotence: bool = True
    #: Upper bound on every aiokafka call (start, metadata, send, ack wait, stop). Only
    #: this abandons an idempotent producer (its batches never expire, aiokafka #1101),
    #: and a new one re-sends what the old one may have written: keep it well above a
    #: leader election (kill -9 of a leader: ~10 s, docs/kafka.md).
    call_timeout: Duration = 60.0
    #: ``/readyz`` says not ready within this long of the brokers becoming unreachable,
    #: and ready again within it of their return (a probe every quarter of it).
    readiness_timeout: Duration = Field(default=10.0, ge=0.4)
    #: At start, create the fixed topics that do not exist (else report them and retry);
    #: a templated topic is created on first use.
    create_topics: bool = False
    topic_partitions: int = Field(default=6, ge=1)
    topic_replication_factor: int = Field(default=3, ge=1)
    max_batch_bytes: ByteSize = 1024 * 1024
    #: Largest record (and produce request) sent; a bigger event is dead-lettered, not
    #: retried forever. Keep it at or below the broker's ``message.max.bytes``.
    max_record_bytes: ByteSize = 1024 * 1024
    #: Batches awaiting their ack at once.
    max_in_flight: int = Field(default=4, ge=1)
    #: The sink already batches from the journal; lingering only adds latency.
    linger: Duration = 0.0
    #: ``at-least-once`` (a crash between ack and cursor commit re-sends that batch) or
    #: ``exactly-once``: each journal batch in one Kafka transaction together with the
    #: sink's position on ``progress_topic`` (``read_committed`` consumers see every event
    #: once). See :mod:`argbridge.sinks.kafka_txn`.
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"
    #: Compacted topic holding each instance's and sink's committed position (created,
    #: compacted, when missing).
    progress_topic: str = "argbridge.progress"
    #: ``transactional_id`` = prefix + instance id + "." + sink name.
    transactional_id_prefix: str = "argbridge-"
    #: This instance's stable id (default: made once and kept in the state dir). Two
    #: daemons with the same id and sink fence each other: the older one stops.
    instance_id: str | None = None
    #: The broker aborts a transaction left open longer than this (a crashed daemon's);
    #: at most the broker's ``transaction.max.timeout.ms`` (15 min by default).
    transaction_timeout: Duration = 60.0

    @field_validator("topic")
    @classmethod
    def _topic_template(cls, value: str) -> str:
        from argbridge.delivery.kafka_records import check_topic_template

        check_topic_template(value)
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("compression")
    @classmethod
    def _codec_available(cls, value: str) -> str:
        if value in ("lz4", "zstd", "snappy"):
            try:
                import cramjam  # noqa: F401
            except ImportError:
                raise ValueError(
                    f"{value} needs the cramjam package (pip install 'argbridge[compression]');"
                    " gzip works without extras"
                ) from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _exactly_once_batch(cls, data: Any) -> Any:
        # Each exactly-once transaction pays fixed round trips (AddPartitionsToTxn, the
        # progress record, EndTxn): a larger default batch lets a backlog drain in fewer
        # of them. Under live load a transaction holds what was journaled while the
        # previous one committed, so the latency does not move. Still bounded by
        # batch_bytes; an explicit batch_size wins.
        if (
            isinstance(data, dict)
            and data.get("delivery") == "exactly-once"
            and "batch_size" not in data
        ):
            return {**data, "batch_size": EXACTLY_ONCE_BATCH_SIZE}
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _raw_timeouts(cls, data: Any, handler: ModelWrapValidatorHandler[KafkaSinkConfig]) -> Any:
        # The checks of _timeouts on the raw input, reported along with field errors.
        problems: list[RawProblem] = []
        if isinstance(data, dict):
            call = raw_duration(data.get("call_timeout", 60.0))
            request = raw_duration(data.get("request_timeout", 30.0))
            if call is not None and request is not None and call <= request:
                problems.append(((), "call_timeout must be larger than request_timeout"))
            if data.get("enable_idempotence") is True and _acks(data.get("acks", "all")) != "all":
                problems.append(((), 'enable_idempotence needs acks = "all"'))
        return supplement_field_errors(data, handler, problems)

    @model_validator(mode="after")
    def _timeouts(self) -> KafkaSinkConfig:
        if self.call_timeout <= self.request_timeout:
            raise ValueError("call_timeout must be larger than request_timeout")
        if self.enable_idempotence and self.acks != "all":
            raise ValueError(
                'enable_idempotence (on by default) needs acks = "all"; '
                "or set enable_idempotence = false"
            )
        if self.delivery == "exactly-once" and self.acks != "all":
            raise ValueError('delivery = "exactly-once" needs acks = "all"')
        if self.delivery == "exactly-once" and self.transaction_timeout < self.call_timeout:
            # A transaction lasts at most call_timeout on our side; a broker-side abort
            # before that would look like fencing and stop the sink.
            raise ValueError("transaction_timeout must be at least call_timeout")
        return self

    @field_validator("progress_topic")
    @classmethod
    def _progress_topic(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
            raise ValueError("must be a Kafka topic name ([A-Za-z0-9._-], 1 to 249 chars)")
        return value

    @field_validator("instance_id", "transactional_id_prefix")
    @classmethod
    def _id_text(cls, value: str | None) -> str | None:
        if value is not None and (not value.isprintable() or "/" in value):
            raise ValueError("must be printable text without '/'")
        return value


class SlackSinkConfig(SinkBase):
    """Slack via an incoming webhook URL or a bot token with chat.postMessage."""

    type: Literal["slack"]
    webhook_url: Secret | None = None
    bot_token: Secret | None = None
    #: Channel for chat.postMessage (a route's ``topic`` overrides it per route).
    channel: str | None = None
    api_base_url: str = "https://slack.com/api"
    #: Messages per second per channel (token bucket) and burst.
    rate: float = Field(default=1.0, gt=0)
    burst: int = Field(default=3, ge=1)
    #: Per-subject cooldown: coalesce a chatty run's events within this window.
    cooldown: Duration = 0.0
    #: Reply in one thread per run/incident (bot-token mode only).
    threads: bool = True
    #: Only these event types (prefixes) reach Slack; empty = whatever the routes send.
    include_types: list[str] = Field(default_factory=list)
    dashboard_url: str | None = None
    timeout: Duration = 10.0
    #: Slack has no idempotency key: ids already posted are remembered to skip resends.
    dedupe_memory: int = Field(default=10_000, ge=0)

    @model_validator(mode="wrap")
    @classmethod
    def _one_mode(cls, data: Any, handler: ModelWrapValidatorHandler[SlackSinkConfig]) -> Any:
        # Checked on the raw input, so it is reported along with every field error.
        problems: list[RawProblem] = []
        if isinstance(data, dict):
            webhook, bot = data.get("webhook_url"), data.get("bot_token")
            if (webhook is None) == (bot is None):
                problems.append(((), "set exactly one of webhook_url or bot_token"))
            if bot is not None and not data.get("channel"):
                problems.append((("channel",), "bot_token needs a channel (chat.postMessage)"))
        return validate_with_raw_checks(data, handler, problems)


class WebhookSinkConfig(SinkBase):
    """Signed outbound webhooks (Standard Webhooks)."""

    type: Literal["webhook"]
    url: str
    #: Signing secrets (``whsec_<base64>``, or raw text used as key bytes); all sign each
    #: message so receivers keep verifying during a rotation.
    secrets: list[Secret] = Field(min_length=1)
    timeout: Duration = 15.0
    retry_schedule: list[Duration] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
    )
    #: Each retry delay varies by ± this fraction.
    retry_jitter: float = Field(default=0.1, ge=0, lt=1)
    #: Allow loopback/private/link-local destinations (SSRF guard off for this endpoint).
    allow_private: bool = False
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_cooldown: Duration = 30.0
    #: Concurrent requests to this endpoint.
    concurrency: int = Field(default=8, ge=1, le=256)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        from argbridge.delivery.ssrf import host_and_port

        host_and_port(value)
        return value
