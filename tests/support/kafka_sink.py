"""A Kafka sink under test: its journal, worker and metrics, and reading back what it wrote.

:func:`running_sink` runs one ``KafkaSink`` named ``k`` with its :class:`SinkWorker` over
a fresh journal while the block runs (bounded), :func:`running_eos_sink` the same with the
``ExactlyOnceKafkaSink`` (``delivery = "exactly-once"``); :func:`fresh` makes a topic name unused
in the session's shared broker; :func:`decode` reads a record with the ``cloudevents``
Kafka binding.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio
from cloudevents.core.bindings import kafka as ce_kafka

from argbridge.backoff import Backoff
from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.config.settings import Settings
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.router import Router
from argbridge.sinks.base import SinkContext, SinkWorker
from argbridge.sinks.kafka import KafkaSink
from argbridge.sinks.kafka_txn import ExactlyOnceKafkaSink
from tests.conftest import settings


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def decode(record: Any) -> Any:
    return ce_kafka.from_kafka_event(
        ce_kafka.KafkaMessage(
            headers=dict(record.headers),
            key=record.key.decode() if record.key is not None else None,
            value=record.value if record.value is not None else b"",
        )
    )


def sink_settings(tmp_path: Path, bootstrap: str, **cfg: Any) -> Settings:
    routes = cfg.pop("routes", None)
    sink = {
        "type": "kafka",
        "bootstrap_servers": bootstrap,
        "request_timeout": 5.0,
        "call_timeout": 20.0,
        "retry_initial": 0.05,
        "retry_max": 0.5,
        # The test brokers do not create topics on demand (as managed clusters): the
        # sink creates its own.
        "create_topics": True,
        "topic_partitions": 4,
        "topic_replication_factor": 1,
        **cfg,
    }
    extra = {"routes": routes} if routes else {}
    return settings(tmp_path, sinks={"k": sink}, **extra)


S = TypeVar("S", KafkaSink, ExactlyOnceKafkaSink)


@dataclass
class Running(Generic[S]):
    journal: Journal
    sink: S
    worker: SinkWorker
    metrics: Metrics

    def count(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


def running_sink(
    tmp_path: Path,
    s: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    backoff: Backoff | None = None,
    within: float = 90.0,
) -> contextlib.AbstractAsyncContextManager[Running[KafkaSink]]:
    return _running(KafkaSink, tmp_path, s, clock=clock, backoff=backoff, within=within)


def running_eos_sink(
    tmp_path: Path,
    s: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    backoff: Backoff | None = None,
    within: float = 90.0,
) -> contextlib.AbstractAsyncContextManager[Running[ExactlyOnceKafkaSink]]:
    assert s.sinks["k"].delivery == "exactly-once"  # type: ignore[union-attr]
    return _running(ExactlyOnceKafkaSink, tmp_path, s, clock=clock, backoff=backoff, within=within)


@contextlib.asynccontextmanager
async def _running(
    make: Callable[..., S],
    tmp_path: Path,
    s: Settings,
    *,
    clock: Clock,
    backoff: Backoff | None,
    within: float,
) -> AsyncIterator[Running[S]]:
    metrics = Metrics()
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        ctx = SinkContext("k", journal, metrics, clock=clock)
        cfg = s.sinks["k"]
        sink = make(cfg, ctx, s)
        worker = SinkWorker(
            sink,
            ctx,
            Router(s.routes, list(s.sinks)),
            batch_size=cfg.batch_size,
            backoff=backoff or Backoff(base=cfg.retry_initial, cap=cfg.retry_max),
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                try:
                    with anyio.fail_after(within):
                        yield Running(journal, sink, worker, metrics)
                finally:
                    worker.stop()
                    tg.cancel_scope.cancel()
        finally:
            await sink.aclose()
