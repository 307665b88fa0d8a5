"""Cluster mode's configuration: the ``[cluster]`` table (opt-in; off by default).

Several argbridge instances of one deployment coordinate through Kafka alone (DESIGN,
"Cluster mode"): a compacted control topic whose partitions the instances share as one
consumer group (run ownership), an internal events topic every journaled event is
produced to (acks=all), and consumer groups over that topic for Slack and outbound
webhooks (one delivery per event, cluster-wide). The connection keys (bootstrap servers,
TLS, SASL) are the Kafka sink's, from :class:`~argbridge.config.kafka.KafkaClientConfig`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from argbridge.config.base import Duration
from argbridge.config.kafka import KafkaClientConfig

WebhookAck = Literal["kafka", "journal"]


class ClusterConfig(KafkaClientConfig):
    """``[cluster]``: see the module docstring."""

    enabled: bool = False
    #: Names the deployment: the instances sharing it share its consumer groups and
    #: topics (group ids and default topic names start with it).
    deployment: str = Field(default="argbridge", pattern=r"^[A-Za-z0-9._-]+$")
    #: This instance's stable id (members, transactional ids, positions); made once and
    #: kept in the state dir when unset.
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$")
    #: The compacted topic of run/pull-source records (default ``<deployment>.control``).
    control_topic: str | None = None
    #: Its partition count (made with it; the unit of ownership).
    control_partitions: int = Field(default=12, ge=1, le=1000)
    #: The internal topic every journaled event is produced to (default
    #: ``<deployment>.events``), keyed, acks=all.
    events_topic: str | None = None
    events_partitions: int = Field(default=12, ge=1, le=1000)
    #: Replication factor of the topics cluster mode creates (capped by the broker count
    #: when the cluster is smaller, with a warning).
    replication_factor: int = Field(default=3, ge=1, le=32)
    #: A member not heard from for this long loses its partitions to the others.
    session_timeout: Duration = Field(default=10.0, gt=0)
    #: How often a member tells the group it lives (at most a third of the session
    #: timeout); also how late the survivors hear that a member died (a handover takes
    #: the session timeout plus up to one interval) and the bound on how late a cut-off
    #: member stops its streams.
    heartbeat_interval: Duration = Field(default=1.0, gt=0)
    #: When a webhook gets its 2xx: ``kafka`` (after the events topic acked it, acks=all;
    #: the cluster default) or ``journal`` (after the local commit, as outside a cluster).
    webhook_ack: WebhookAck = "kafka"
    #: With ``webhook_ack = "kafka"``, how long a webhook waits for Kafka before it is
    #: answered 503 with Retry-After.
    webhook_ack_timeout: Duration = Field(default=5.0, gt=0)
    #: With ``webhook_ack = "kafka"`` and Kafka unreachable: answer 503 (``false``) or
    #: acknowledge after the local commit (``true``; the event reaches Kafka once it is
    #: back, but is lost with this instance's disk).
    webhook_fallback_to_journal: bool = False
    #: Slack/outbound-webhook delivery drops repeats of a CloudEvent id seen within this
    #: window (rebuilt from the events topic on assignment).
    delivery_dedupe_window: Duration = Field(default=3600.0, gt=0)
    #: Slack deliveries that fail for now are retried after these delays (through Kafka
    #: retry topics), then dead-lettered; the first entry is the first attempt. Webhook
    #: sinks keep their own ``retry_schedule``.
    delivery_retry_schedule: list[Duration] = Field(
        default_factory=lambda: [0.0, 1.0, 5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0],
        min_length=1,
        max_length=17,
    )

    @model_validator(mode="after")
    def _timing(self) -> ClusterConfig:
        if self.heartbeat_interval * 3 > self.session_timeout:
            raise ValueError(
                "cluster.heartbeat_interval must be at most a third of cluster.session_timeout "
                f"(got {self.heartbeat_interval}s and {self.session_timeout}s)"
            )
        return self

    @property
    def control_topic_name(self) -> str:
        return self.control_topic or f"{self.deployment}.control"

    @property
    def events_topic_name(self) -> str:
        return self.events_topic or f"{self.deployment}.events"

    def group_id(self, role: str) -> str:
        """The consumer group of ``role`` (``control``, ``delivery.<sink>``…)."""
        return f"{self.deployment}.{role}"
