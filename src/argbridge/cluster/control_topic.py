"""The control topic seen from outside the consumer group: creating it (compacted, with
segments that roll so compaction can work) and reading it whole for ``argbridge status``.

The member (:mod:`argbridge.cluster.member`) calls :func:`ensure_control_topic` before it
joins, and :func:`cluster_view` when asked for the cluster-wide status; both use their
own short-lived admin client or consumer, never the member's group consumer.
"""

from __future__ import annotations

from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from argbridge.cluster.records import RunRecord, Tombstone, decode
from argbridge.config.cluster import ClusterConfig
from argbridge.sinks.kafka_client import (
    broker_count,
    client_kwargs,
    compacted_topic,
    create_topics,
    new_admin,
)

#: The control topic's compaction: every assignment re-reads a partition from its start,
#: and Kafka never compacts a partition's active segment, which by default rolls only
#: after 7 days or 1 GiB. Positions are recorded up to twice a second per run, so an
#: active segment of days holds hundreds of thousands of old values per partition;
#: rolling it every 10 minutes keeps a re-read to the records plus minutes of updates.
CONTROL_TOPIC_COMPACTION = {"segment.ms": "600000", "min.cleanable.dirty.ratio": "0.5"}
#: Runs listed by ``argbridge status`` per owner (the counts cover all of them).
STATUS_RUNS = 50


async def ensure_control_topic(cfg: ClusterConfig, topic: str, log: Any) -> None:
    """Create ``topic`` (``cluster.control_partitions`` partitions, compacted) unless it
    exists; the replication factor is capped at the brokers there are (logged)."""
    admin = new_admin(cfg)
    try:
        await admin.start()
        if topic in await admin.list_topics():
            return
        brokers = await broker_count(admin)
        replication = min(cfg.replication_factor, brokers)
        if replication < cfg.replication_factor:
            log.warning(
                "cluster.replication_capped",
                topic=topic,
                replication_factor=cfg.replication_factor,
                brokers=brokers,
            )
        new = compacted_topic(
            topic, cfg.control_partitions, replication, **CONTROL_TOPIC_COMPACTION
        )
        failed = await create_topics(admin, [new], cfg.request_timeout)
        if failed:
            raise KafkaError(f"cannot create the control topic: {failed[0]}")
        log.info("cluster.control_topic_created", topic=topic, partitions=cfg.control_partitions)
    finally:
        await admin.close()


async def cluster_view(cfg: ClusterConfig, topic: str, client_id: str) -> dict[str, Any]:
    """The group's members and every record of the control topic, read now (bounded by
    ``request_timeout``), summarised by :func:`summarize`."""
    members: list[dict[str, str]] = []
    state = ""
    admin = new_admin(cfg)
    with anyio.fail_after(cfg.request_timeout):
        try:
            await admin.start()
            for response in await admin.describe_consumer_groups([cfg.group_id("control")]):
                for group in response.groups:
                    state = group[2]
                    for member in group[5]:
                        members.append(
                            {"member_id": member[0], "client_id": member[1], "host": member[2]}
                        )
        finally:
            await admin.close()
        records = await read_records(cfg, topic, client_id)
    return summarize(records, members, state)


async def read_records(cfg: ClusterConfig, topic: str, client_id: str) -> list[RunRecord]:
    """Every live record of the control topic (the newest value of each key; deleted
    ones left out), read to the ends the partitions had when it started."""
    consumer = AIOKafkaConsumer(
        **{**client_kwargs(cfg), "client_id": f"{client_id}-status"},
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(cfg.control_partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        latest: dict[str, RunRecord | None] = {}
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for m in messages:
                    item = decode(m.key, m.value)
                    if isinstance(item, RunRecord):
                        latest[item.key] = item
                    elif isinstance(item, Tombstone) and not item.hint:
                        latest[item.key] = None
        return [r for r in latest.values() if r is not None]
    finally:
        await consumer.stop()


def summarize(
    records: list[RunRecord], members: list[dict[str, str]], state: str = ""
) -> dict[str, Any]:
    """The cluster-wide part of ``argbridge status``: members, and the runs of the control
    topic by owner (an active run's owner is the instance that last recorded it)."""
    by_owner: dict[str, list[str]] = {}
    statuses: dict[str, int] = {}
    for record in sorted(records, key=lambda r: r.key):
        statuses[record.status] = statuses.get(record.status, 0) + 1
        if record.active:
            by_owner.setdefault(record.owner or "-", []).append(record.key)
    return {
        "group_state": state,
        "members": sorted(m["client_id"] for m in members),
        "runs": len(records),
        "statuses": statuses,
        "following_by_owner": {
            owner: {"count": len(keys), "runs": keys[:STATUS_RUNS]}
            for owner, keys in sorted(by_owner.items())
        },
    }
