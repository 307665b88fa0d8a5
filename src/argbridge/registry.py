"""The one place that maps a config ``type`` to the class that implements it.

Sinks are built as ``cls(config, ctx, settings)`` and sources as
``cls(name, config, settings)`` (a simulated arga source by its hosting factory);
modules are imported lazily so a daemon that uses only the file sink never imports
aiokafka, nor a production arga source the simulator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from argbridge.config.arga import ArgaSourceConfig
from argbridge.config.profiles import (
    ArgosCIProfileConfig,
    ArgosOmniProfileConfig,
    ArgusE2EProfileConfig,
)
from argbridge.config.settings import Settings, SinkConfig, SourceConfig
from argbridge.config.sinks import KafkaSinkConfig
from argbridge.sinks.base import Sink, SinkContext
from argbridge.sources.base import Source

if TYPE_CHECKING:
    from argbridge.journal import Journal
    from argbridge.journal.roles import SinkJournal

SINKS: dict[str, str] = {
    "file": "argbridge.sinks.file:FileSink",
    "kafka": "argbridge.sinks.kafka_txn:build_kafka_sink",
    "slack": "argbridge.sinks.slack:SlackSink",
    "webhook": "argbridge.sinks.webhook:WebhookSink",
}
SOURCES: dict[str, str] = {
    "replay": "argbridge.sources.replay:ReplaySource",
    "arga": "argbridge.sources.arga.source:ArgaSource",
    "argus-webhook": "argbridge.sources.webhook:WebhookSource",
    "webhook": "argbridge.sources.webhook:WebhookSource",
    "sse": "argbridge.sources.sse:SSESource",
    "websocket": "argbridge.sources.websocket:WebSocketSource",
    "poll": "argbridge.sources.poll:PollSource",
}


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def sink_journal(config: SinkConfig, journal: Journal) -> SinkJournal:
    """The journal role a sink of ``config`` gets: the exactly-once Kafka sink's
    (:class:`~argbridge.journal.roles.ExactlyOnceSinkJournal`: its cursor reconciled with
    Kafka's progress topic, its fenced alert), else the common sink role."""
    if isinstance(config, KafkaSinkConfig) and config.delivery == "exactly-once":
        return journal.for_exactly_once_sink()
    return journal.for_sink()


def build_sink(config: SinkConfig, ctx: SinkContext, settings: Settings) -> Sink:
    sink: Sink = _load(SINKS[config.type])(config, ctx, settings)
    return sink


#: An arga source with ``simulate.enabled`` gets the in-process simulator as its upstream
#: (so the production source never imports the simulator).
SIMULATED_ARGA = "argbridge.simulator.hosting:simulated_arga_source"


def build_source(name: str, config: SourceConfig, settings: Settings) -> Source:
    if isinstance(config, ArgusE2EProfileConfig | ArgosCIProfileConfig | ArgosOmniProfileConfig):
        # A profile is configuration: it expands to generic sources (one or a group).
        parts = {n: build_source(n, c, settings) for n, c in config.expand(name).items()}
        if len(parts) == 1 and name in parts:
            return parts[name]
        from argbridge.sources.group import SourceGroup

        return SourceGroup(name, parts)
    path = SOURCES[config.type]
    if isinstance(config, ArgaSourceConfig) and config.simulated:
        path = SIMULATED_ARGA
    source: Source = _load(path)(name, config, settings)
    return source
