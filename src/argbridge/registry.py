"""The one place that maps a config ``type`` to the class that implements it.

Sinks are built as ``cls(config, ctx, settings)`` and sources as
``cls(name, config, settings)``; modules are imported lazily so a daemon that uses
only the file sink never imports aiokafka.
"""

from __future__ import annotations

import importlib
from typing import Any

from argbridge.config.settings import Settings, SinkConfig, SourceConfig
from argbridge.sinks.base import Sink, SinkContext
from argbridge.sources.base import Source

SINKS: dict[str, str] = {
    "file": "argbridge.sinks.file:FileSink",
    "kafka": "argbridge.sinks.kafka_txn:build_kafka_sink",
    "slack": "argbridge.sinks.slack:SlackSink",
    "webhook": "argbridge.sinks.webhook:WebhookSink",
}
SOURCES: dict[str, str] = {
    "replay": "argbridge.sources.replay:ReplaySource",
    "arga": "argbridge.sources.arga:ArgaSource",
    "argus-webhook": "argbridge.sources.webhook:WebhookSource",
    "webhook": "argbridge.sources.webhook:WebhookSource",
}


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_sink(config: SinkConfig, ctx: SinkContext, settings: Settings) -> Sink:
    sink: Sink = _load(SINKS[config.type])(config, ctx, settings)
    return sink


def build_source(name: str, config: SourceConfig, settings: Settings) -> Source:
    source: Source = _load(SOURCES[config.type])(name, config, settings)
    return source
