"""Cluster mode under test: ``[cluster]`` settings for a test broker, and one instance's
:class:`~argbridge.cluster.node.ClusterNode` running over a fresh journal.

:func:`cluster_settings` points ``[cluster]`` at a broker with a fresh events topic (and
control topic) name, short request timeouts, one replica; :func:`running_node` runs the
node's components while the block runs (bounded) and closes them after.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.cluster.node import ClusterNode, journal_sinks
from argbridge.config.settings import Settings
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from tests.conftest import settings
from tests.support.kafka_sink import fresh


def cluster_config(bootstrap: str, **cluster: Any) -> dict[str, Any]:
    """A ``[cluster]`` table on ``bootstrap`` with topics no other test uses."""
    return {
        "enabled": True,
        "bootstrap_servers": bootstrap,
        "deployment": fresh("dep"),
        "request_timeout": 5.0,
        "events_partitions": 3,
        "replication_factor": 1,
        **cluster,
    }


def cluster_settings(tmp_path: Path, bootstrap: str, **kw: Any) -> Settings:
    """Settings (no listener unless asked) with ``[cluster]`` from :func:`cluster_config`
    (``cluster=`` adds keys to it)."""
    return settings(tmp_path, cluster=cluster_config(bootstrap, **kw.pop("cluster", {})), **kw)


@dataclass
class RunningNode:
    journal: Journal
    node: ClusterNode
    metrics: Metrics

    @property
    def topic(self) -> str:
        return self.node.config.events_topic_name


@contextlib.asynccontextmanager
async def running_node(
    tmp_path: Path, s: Settings, *, clock: Clock = SYSTEM_CLOCK, within: float = 90.0
) -> AsyncIterator[RunningNode]:
    metrics = Metrics()
    async with Journal(tmp_path / "journal", sinks=journal_sinks(s), clock=clock) as journal:
        node = ClusterNode(s, journal.for_sink(), metrics, clock, seq_of=journal.log.seq_of)
        await node.open()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(node.run)
                try:
                    with anyio.fail_after(within):
                        yield RunningNode(journal, node, metrics)
                finally:
                    node.stop()
                    tg.cancel_scope.cancel()
        finally:
            await node.aclose()
