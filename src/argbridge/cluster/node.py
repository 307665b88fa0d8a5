"""One instance's part of the cluster: what the runtime starts when ``cluster.enabled``.

:class:`ClusterNode` owns the cluster-mode components of one daemon and hands the
others the narrow roles they need:

- :attr:`ClusterNode.events`: the internal events-topic producer
  (:mod:`argbridge.cluster.events`), an :class:`~argbridge.cluster.roles.EventsAcked`;
- :attr:`ClusterNode.webhook_acks`: what an inbound webhook's 2xx waits for (the events
  topic's ack with ``cluster.webhook_ack = "kafka"``, else the journal commit) and which
  events the topic could never take (:mod:`argbridge.cluster.webhook_ack`), given to the
  sources in their :class:`~argbridge.sources.base.SourceContext`;
- :attr:`ClusterNode.instance_id`: this instance's one id (members, transactional ids,
  records): ``cluster.instance_id``, else the id the exactly-once sink keeps in the
  journal's state store (made once), known after :meth:`ClusterNode.open`.

The runtime builds it once the journal is open (:meth:`open`), runs :meth:`run` beside
the sink workers, calls :meth:`stop` when it drains them (the batch in flight to the
events topic is finished) and :meth:`aclose` after.
"""

from __future__ import annotations

from argbridge.clock import Clock
from argbridge.cluster.events import EVENTS_SINK, EventsProducer
from argbridge.cluster.roles import WebhookAcks
from argbridge.cluster.webhook_ack import JournalAck, KafkaAck, SeqOf
from argbridge.config.settings import Settings
from argbridge.delivery.kafka_progress import INSTANCE_ID_KEY
from argbridge.errors import ConfigError
from argbridge.journal.roles import SinkJournal
from argbridge.logging import get_logger
from argbridge.metrics import Metrics
from argbridge.sinks.base import Health, WorkerRole
from argbridge.sinks.kafka_txn_progress import stable_id


def journal_sinks(settings: Settings) -> list[str]:
    """The sinks whose cursors the journal keeps: the configured ones, and in cluster
    mode the events producer's (it holds retention until Kafka has the events)."""
    names = list(settings.sinks)
    if settings.cluster.enabled:
        names.append(EVENTS_SINK)
    return names


class ClusterNode:
    """This instance's cluster-mode components (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        journal: SinkJournal,
        metrics: Metrics,
        clock: Clock,
        *,
        seq_of: SeqOf | None = None,
    ) -> None:
        if EVENTS_SINK in settings.sinks:
            raise ConfigError(
                [(f"sinks.{EVENTS_SINK}", "this sink name is cluster mode's own: rename it")]
            )
        self.settings = settings
        self.config = settings.cluster
        self.log = get_logger(component="cluster")
        self._journal = journal
        self.events = EventsProducer(settings, journal, metrics, clock)
        #: What a webhook's 2xx waits for (``webhook_ack = "kafka"``; else the journal
        #: commit, as outside a cluster), and the events topic's size limit for both.
        self.webhook_acks: WebhookAcks | None = JournalAck(self.events.sink.config)
        if self.config.webhook_ack == "kafka" and seq_of is not None:
            self.webhook_acks = KafkaAck(
                self.events,
                seq_of,
                events_config=self.events.sink.config,
                timeout=self.config.webhook_ack_timeout,
                fallback=self.config.webhook_fallback_to_journal,
                unreachable=lambda: self.events.unreachable,
                clock=clock,
                metrics=metrics,
            )
        self._instance_id: str | None = None

    async def open(self) -> None:
        """Resolve :attr:`instance_id` (reads, or makes once, the stored id)."""
        self._instance_id = self.config.instance_id or await stable_id(
            self._journal, INSTANCE_ID_KEY
        )
        self.log.info(
            "cluster.node",
            deployment=self.config.deployment,
            instance_id=self._instance_id,
            events_topic=self.config.events_topic_name,
            webhook_ack=self.config.webhook_ack,
        )

    @property
    def instance_id(self) -> str:
        if self._instance_id is None:
            raise RuntimeError("the cluster node is not open yet")
        return self._instance_id

    async def run(self) -> None:
        """Run the components until :meth:`stop` or cancellation."""
        await self.events.run()

    def stop(self) -> None:
        """Finish what is in flight, then return from :meth:`run` (a drain)."""
        self.events.stop()

    async def aclose(self) -> None:
        await self.events.aclose()

    def health(self) -> dict[str, Health]:
        """Readiness of the components (``/readyz``), by name."""
        return {EVENTS_SINK: self.events.health()}

    def workers(self) -> dict[str, WorkerRole]:
        """The sink workers cluster mode runs for itself, by name (``argbridge status``
        lists them beside the configured sinks): the events producer."""
        return {EVENTS_SINK: self.events.worker}
