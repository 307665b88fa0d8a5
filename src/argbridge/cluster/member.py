"""The control-topic member: which runs this instance follows, cluster-wide one owner each.

Owns :class:`ControlMember`, one per instance in cluster mode. It

- creates the compacted control topic (``cluster.control_partitions`` partitions) when
  missing (:mod:`argbridge.cluster.control_topic`, which also reads it whole for the
  cluster-wide status), and joins the consumer group ``cluster.group_id("control")`` on it with the
  configured session timeout and heartbeat interval;
- on assign, reads each new partition from its start to the end it had at assignment
  (a compacted topic: the records of its runs; only the newest message of each key is
  decoded, :class:`~argbridge.cluster.table.Latest`), then follows every active record from
  its position through the :class:`RunOwner` of the record's source (the Arga source,
  the wrapper of a generic pull source), turns hints into records and deletes them
  (:mod:`argbridge.cluster.table`), and keeps reading for new hints;
- on revoke, stops the followers of those partitions cleanly (their positions stay as
  last recorded: only acked positions are ever recorded, :mod:`argbridge.cluster.lease`);
- deletes the ``done`` records of its partitions once their grace is over
  (:data:`FINISHED_GRACE`; refusals and config runs keep theirs);
- is the :class:`ControlPublisher` sources use instead of following: discovery, config
  runs, ``follow`` and ``start`` send hints (idempotent by key; repeats of a non-forced
  hint are not sent again by this instance);
- keeps a *lease*: every heartbeat interval it commits offset 0 of its partitions (a
  request only a current member of the current generation can make, so a success proves
  membership). When no commit succeeded for a session timeout (paused by SIGSTOP, cut
  off from the brokers) it stops every follower by itself, at once on running again,
  before the group tells it anything; it resumes only after a new assignment or a
  renewed lease, re-reading its partitions first.

Writes of records go only to partitions this instance owns, and only while its lease
holds. Counts and timings go to the ``argbridge_cluster_*`` metrics; :meth:`status` is the
``argbridge status`` view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram

from argbridge.clock import SYSTEM_CLOCK, Clock
from argbridge.cluster.control_topic import cluster_view, ensure_control_topic
from argbridge.cluster.lease import RunLease
from argbridge.cluster.records import (
    RunId,
    RunRecord,
    Tombstone,
    decode,
    encode_hint,
    encode_record,
    new_hint,
    partition_of,
)
from argbridge.cluster.roles import EventsAcked, RunOwner
from argbridge.cluster.table import Latest, PartitionTable, Plan
from argbridge.config.cluster import ClusterConfig
from argbridge.errors import ClusterError
from argbridge.logging import get_logger
from argbridge.metrics import Metrics
from argbridge.sinks.kafka_client import client_kwargs

#: How long a finished (``done``) run's record stays before it is deleted: longer than a
#: discovery listing may lag behind the run's end (a late hint meets the record and is
#: dropped, instead of making a new record and following the finished run again).
FINISHED_GRACE = 600.0
#: How long the broker holds a fetch of the control topic open when there is nothing new
#: (Kafka's default 500 ms). A broker answers one connection's requests in order, so
#: after a rebalance the fetch and end-offset requests of the newly assigned partitions
#: waited behind the last long-poll fetch: up to 500 ms of every handover, as nothing is
#: written while every member is between revoke and assignment. 100 ms costs an idle
#: member ten small fetches a second.
CONTROL_FETCH_MAX_WAIT_MS = 100
#: How soon the consume loop looks again while a newly assigned partition's end offset
#: is not known yet (the assignment came during a read).
CATCH_UP_WAKE_MS = 50
HANDOVER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)


class ClusterMetrics:
    """``argbridge_cluster_*``: owned runs, partitions, rebalances, handover time, records
    of a newer schema, cut-offs."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.owned_runs = Gauge(
            "argbridge_cluster_owned_runs", "Runs this instance follows as owner", registry=r
        )
        self.partitions = Gauge(
            "argbridge_cluster_owned_partitions",
            "Control-topic partitions assigned to this instance",
            registry=r,
        )
        self.rebalances = Counter(
            "argbridge_cluster_rebalances_total",
            "Control-group rebalances seen by this instance, by what changed",
            ["change"],
            registry=r,
        )
        self.handover = Histogram(
            "argbridge_cluster_handover_seconds",
            "From a partition's assignment to each of its runs' follower started",
            buckets=HANDOVER_BUCKETS,
            registry=r,
        )
        self.newer = Counter(
            "argbridge_cluster_newer_records_total",
            "Control records of a newer schema version, left alone",
            registry=r,
        )
        self.unreadable = Counter(
            "argbridge_cluster_unreadable_records_total",
            "Control records that could not be read",
            registry=r,
        )
        self.cut_offs = Counter(
            "argbridge_cluster_cut_offs_total",
            "Times this instance stopped its streams because its membership lapsed",
            registry=r,
        )


@dataclass
class _Owned:
    lease: RunLease
    partition: int
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, member: ControlMember) -> None:
        self.member = member

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.member._revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.member._assigned({tp.partition for tp in assigned})


class ControlMember:
    """See the module docstring."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        instance_id: str,
        events: EventsAcked,
        journal_seq: Callable[[], int],
        metrics: Metrics,
        clock: Clock = SYSTEM_CLOCK,
        finished_grace: float = FINISHED_GRACE,
    ) -> None:
        self.config = config
        self.finished_grace = finished_grace
        self.instance_id = instance_id
        self.events = events
        self.journal_seq = journal_seq
        self.clock = clock
        self.metrics = ClusterMetrics(metrics)
        self.topic = config.control_topic_name
        #: Names this instance among the group's members (``argbridge status``).
        self.client_id = f"{config.client_id}-control-{instance_id}"
        self.log = get_logger(component="cluster", kind="control", instance=instance_id)
        self.owners: dict[str, RunOwner] = {}
        self.tables: dict[int, PartitionTable] = {}
        #: Partitions assigned but not yet read up to their end offset at assignment.
        self._catching_up: dict[int, tuple[int, float]] = {}
        #: What those partitions' re-reads kept so far: the newest message of each key.
        self._latest: dict[int, Latest] = {}
        self.owned: dict[str, _Owned] = {}
        self.assigned: set[int] = set()
        self.rebalances = 0
        self.cut_off = False
        self.lease_until = 0.0
        self.started = anyio.Event()
        self._requested: set[str] = set()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._changed = anyio.Event()

    # -- sources ------------------------------------------------------------------------

    def register(self, owner: RunOwner) -> None:
        """``owner`` follows the records of its source name (a reload's rebuilt source
        replaces the old one: its runs move to the new one)."""
        previous = self.owners.get(owner.name)
        self.owners[owner.name] = owner
        if previous is not None and previous is not owner and self._tg is not None:
            self._tg.start_soon(self._reown, owner.name)

    async def _reown(self, source: str) -> None:
        await self._stop_owned(
            {k for k, o in self.owned.items() if o.lease.record.run.source == source}
        )
        for p in sorted(self.assigned - set(self._catching_up)):
            table = self.tables.get(p)
            if table is not None and self.lease_valid():
                await self._execute(
                    p, table.plan(None, owner=self.instance_id, now=self.clock.time())
                )

    async def request(self, run: RunId, origin: str, *, force: bool = False) -> None:
        """Send a hint for ``run`` (a non-forced repeat is not sent again); raises
        :class:`~argbridge.errors.ClusterError` when Kafka does not take it in time."""
        if not force and run.key in self._requested:
            return
        hint = new_hint(run, origin, self.instance_id, self.clock.time(), force=force)
        try:
            with anyio.fail_after(self.config.request_timeout):
                await self._send(hint.key, encode_hint(hint), run)
        except (KafkaError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot ask the cluster for {run.key}: {type(exc).__name__}"
            ) from None
        self._requested.add(run.key)

    def source_stopped(self, source: str) -> None:
        """``source`` stopped (a crash its supervisor restarts, a reload): its owned runs
        are released and handed to it again once it runs."""
        if self._tg is not None and not self._tg.cancel_scope.cancel_called:
            self._tg.start_soon(self._reown, source)

    async def _send(self, key: str, value: bytes | None, run: RunId) -> int:
        await self.started.wait()
        assert self._producer is not None
        meta = await self._producer.send_and_wait(
            self.topic,
            value,
            key=key.encode(),
            partition=partition_of(run, self.config.control_partitions),
        )
        return int(meta.offset)

    # -- the RecordWriter role of the leases -----------------------------------------------

    async def write(self, record: RunRecord) -> bool:
        partition = partition_of(record.run, self.config.control_partitions)
        if not self.lease_valid() or partition not in self.assigned:
            return False
        offset = await self._send(record.key, encode_record(record), record.run)
        table = self.tables.get(partition)
        if table is not None:
            table.apply(offset, record)
        return True

    async def delete(self, record: RunRecord) -> bool:
        """The tombstone of ``record`` (a finished run), on the same terms as
        :meth:`write` (the swept ``done`` records, :meth:`_sweep`)."""
        partition = partition_of(record.run, self.config.control_partitions)
        if not self.lease_valid() or partition not in self.assigned:
            return False
        offset = await self._send(record.key, None, record.run)
        table = self.tables.get(partition)
        if table is not None:
            table.apply(offset, Tombstone(record.key, False))
        self.log.info("cluster.record_deleted", key=record.key, status="done")
        return True

    def lease_valid(self) -> bool:
        return not self.cut_off and self.clock.monotonic() < self.lease_until

    # -- lifecycle ----------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        cfg = self.config
        await self._ensure_topic()
        producer = AIOKafkaProducer(
            **{**client_kwargs(cfg), "client_id": self.client_id},
            acks="all",
            enable_idempotence=True,
        )
        try:
            await producer.start()
            consumer = AIOKafkaConsumer(
                **{**client_kwargs(cfg), "client_id": self.client_id},
                group_id=cfg.group_id("control"),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=int(cfg.session_timeout * 1000),
                heartbeat_interval_ms=int(cfg.heartbeat_interval * 1000),
                rebalance_timeout_ms=int(max(cfg.session_timeout, 30) * 1000),
                metadata_max_age_ms=30_000,
                fetch_max_wait_ms=CONTROL_FETCH_MAX_WAIT_MS,
            )
            self._producer = producer
            self._consumer = consumer
            consumer.subscribe([self.topic], listener=_Listener(self))
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    await consumer.start()
                    self.started.set()
                    task_status.started()
                    self.log.info(
                        "cluster.member_started", topic=self.topic, group=cfg.group_id("control")
                    )
                    tg.start_soon(self._lease_loop)
                    tg.start_soon(self._watchdog)
                    tg.start_soon(self._sweep)
                    await self._consume(consumer)
            finally:
                self._tg = None
                # A restart (the runtime supervises this task) begins anew.
                self.started = anyio.Event()
                self.assigned = set()
                self.tables.clear()
                self._catching_up.clear()
                self._latest.clear()
                with anyio.CancelScope(shield=True):
                    await self._stop_owned(set(self.owned))
                    with anyio.move_on_after(cfg.session_timeout):
                        await consumer.stop()  # leaves the group: a prompt handover
        finally:
            # Also after a failed start (Kafka unreachable): no client left open.
            with anyio.CancelScope(shield=True), anyio.move_on_after(cfg.session_timeout):
                await producer.stop()

    async def _ensure_topic(self) -> None:
        await ensure_control_topic(self.config, self.topic, self.log)

    # -- membership -----------------------------------------------------------------------

    async def _revoked(self, partitions: set[int]) -> None:
        self.rebalances += 1
        self.metrics.rebalances.labels("revoked").inc()
        lost = [k for k, o in self.owned.items() if o.partition in partitions]
        self.log.info("cluster.revoked", partitions=sorted(partitions), runs=len(lost))
        began = self.clock.monotonic()
        await self._stop_owned(set(lost))
        self.log.info(
            "cluster.revoke_done",
            runs=len(lost),
            seconds=round(self.clock.monotonic() - began, 3),
        )
        self.assigned -= partitions
        for p in partitions:
            self.tables.pop(p, None)
            self._catching_up.pop(p, None)
            self._latest.pop(p, None)
        self.metrics.partitions.set(len(self.assigned))

    async def _assigned(self, partitions: set[int]) -> None:
        self.rebalances += 1
        self.metrics.rebalances.labels("assigned").inc()
        consumer = self._consumer
        assert consumer is not None
        # A successful join is membership: the lease starts now.
        self.lease_until = self.clock.monotonic() + self.config.session_timeout
        self.cut_off = False
        self.assigned = set(partitions)
        self.metrics.partitions.set(len(self.assigned))
        self.log.info("cluster.assigned", partitions=sorted(partitions))
        await self._reread(partitions)

    async def _reread(self, partitions: set[int]) -> None:
        """Read ``partitions`` again from their start (the consume loop learns their end
        offsets and plans each once it reached it). No request here: this runs inside
        the rebalance listener."""
        consumer = self._consumer
        assert consumer is not None
        now = self.clock.monotonic()
        for p in sorted(partitions):
            consumer.seek(TopicPartition(self.topic, p), 0)
            self.tables[p] = PartitionTable()
            self._catching_up[p] = (-1, now)
            self._latest[p] = Latest()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        idle_ms = int(self.config.heartbeat_interval * 1000)
        while True:
            unknown = [p for p, (end, _) in self._catching_up.items() if end < 0]
            if unknown:
                tps = [TopicPartition(self.topic, p) for p in unknown]
                ends = await consumer.end_offsets(tps)
                for tp in tps:
                    if tp.partition in self._catching_up:
                        since = self._catching_up[tp.partition][1]
                        self._catching_up[tp.partition] = (int(ends[tp]), since)
                # A partition already read to its end (or empty) is ready now: the next
                # read may wait for new messages, and during a rebalance none come.
                await self._check_caught_up(consumer)
            # While a partition's end is unknown (assigned during this read), wake soon
            # to learn it; else wait for messages as long as a heartbeat interval.
            unknown_end = any(end < 0 for end, _ in self._catching_up.values())
            batches = await consumer.getmany(
                timeout_ms=min(idle_ms, CATCH_UP_WAKE_MS) if unknown_end else idle_ms
            )
            for tp, messages in batches.items():
                p = tp.partition
                table = self.tables.get(p)
                if table is None or p not in self.assigned:
                    continue
                latest = self._latest.get(p)
                if latest is not None:
                    # Re-reading after an assignment: decoded once it reached the end.
                    for m in messages:
                        latest.add(m.offset, m.key, m.value)
                    continue
                touched: list[str] = []
                for m in messages:
                    item = decode(m.key, m.value)
                    key = table.apply(m.offset, item)
                    self.log.debug(
                        "cluster.read",
                        partition=p,
                        offset=m.offset,
                        key=key,
                        item=type(item).__name__,
                    )
                    self._count(item, m.offset, p)
                    if key is not None:
                        touched.append(key)
                if p not in self._catching_up and touched and self.lease_valid():
                    plan = table.plan(touched, owner=self.instance_id, now=self.clock.time())
                    await self._execute(p, plan)
            await self._check_caught_up(consumer)

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        for p, (end, _) in list(self._catching_up.items()):
            tp = TopicPartition(self.topic, p)
            if end >= 0 and p in self.assigned and await consumer.position(tp) >= end:
                await self._caught_up(p)

    def _count(self, item: Any, offset: int, partition: int) -> None:
        from argbridge.cluster.records import Newer, Unreadable

        if isinstance(item, Newer):
            self.metrics.newer.inc()
            self.log.warning(
                "cluster.newer_record",
                key=item.key,
                version=item.version,
                partition=partition,
                offset=offset,
            )
        elif isinstance(item, Unreadable):
            self.metrics.unreadable.inc()
            self.log.warning(
                "cluster.unreadable_record",
                key=item.key,
                reason=item.reason,
                partition=partition,
                offset=offset,
            )

    async def _caught_up(self, partition: int) -> None:
        catching = self._catching_up.pop(partition, None)
        latest = self._latest.pop(partition, None)
        table = self.tables.get(partition)
        if catching is None or table is None:
            return
        read = latest.read if latest is not None else 0
        for offset, key, value in latest.drain() if latest is not None else ():
            item = decode(key, value)
            table.apply(offset, item)
            self._count(item, offset, partition)
        started = catching[1]
        plan = table.plan(None, owner=self.instance_id, now=self.clock.time())
        self.log.info(
            "cluster.partition_ready",
            partition=partition,
            records=len(table.entries),
            read=read,
            decoded=table.read,
            follow=len(plan.follow),
            seconds=round(self.clock.monotonic() - started, 3),
        )
        if self.lease_valid():
            await self._execute(partition, plan, assigned_at=started)

    async def _execute(
        self, partition: int, plan: Plan, *, assigned_at: float | None = None
    ) -> None:
        for record in plan.write:
            await self.write(record)
        for record in plan.follow:
            if record.key in self.owned:
                continue
            await self._follow(partition, record, assigned_at)
        for key in plan.drop:
            parts = key.split("/")
            await self._send(key, None, RunId(parts[1], parts[2], parts[3]))

    async def _follow(self, partition: int, record: RunRecord, assigned_at: float | None) -> None:
        owner = self.owners.get(record.run.source)
        if owner is None:
            self.log.warning("cluster.unknown_source", key=record.key, source=record.run.source)
            return
        assert self._tg is not None
        await owner.started.wait()
        lease = RunLease(record, self, self.events, self.journal_seq, self.clock)
        owned = self.owned[record.key] = _Owned(lease, partition)
        try:
            await self._tg.start(self._hold, owner, owned)
        except BaseException:  # cancelled before it ran (the member stops)
            if self.owned.get(record.key) is owned:
                del self.owned[record.key]
            owned.done.set()
            raise
        self.metrics.owned_runs.set(len(self.owned))
        if assigned_at is not None:
            self.metrics.handover.observe(self.clock.monotonic() - assigned_at)

    async def _hold(
        self,
        owner: RunOwner,
        owned: _Owned,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        key = owned.lease.key
        started = False
        try:
            with owned.scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(owned.lease.run)
                    try:
                        await owner.own(owned.lease)
                    except Exception as exc:
                        self.log.error("cluster.own_failed", key=key, error=exc, exc_info=exc)
                        return
                    finally:
                        started = True
                        task_status.started()
                    self.log.info(
                        "cluster.following",
                        key=key,
                        position=owned.lease.record.position,
                        partition=owned.partition,
                    )
                    await anyio.sleep_forever()
        finally:
            if not started:
                task_status.started()
            with anyio.CancelScope(shield=True):
                await owner.disown(key)
            if self.owned.get(key) is owned:
                del self.owned[key]
            self.metrics.owned_runs.set(len(self.owned))
            owned.done.set()

    async def _stop_owned(self, keys: set[str]) -> None:
        for key in keys:
            owned = self.owned.get(key)
            if owned is not None:
                owned.scope.cancel()
        for key in keys:
            owned = self.owned.get(key)
            if owned is not None:
                await owned.done.wait()

    def finished(self, key: str) -> None:
        """An owner's run ended by itself (done, refused): release its lease task."""
        owned = self.owned.get(key)
        if owned is not None:
            owned.scope.cancel()

    # -- the lease ------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        interval = self.config.heartbeat_interval
        while True:
            await self.clock.sleep(interval)
            assigned = sorted(self.assigned)
            if not assigned:
                continue
            sent = self.clock.monotonic()
            try:
                with anyio.fail_after(interval):
                    await consumer.commit({TopicPartition(self.topic, p): 0 for p in assigned})
            except (KafkaError, TimeoutError) as exc:
                self.log.debug("cluster.lease_not_renewed", error=type(exc).__name__)
                continue
            self.lease_until = sent + self.config.session_timeout
            self._changed.set()
            if self.cut_off:
                self.cut_off = False
                self.log.info("cluster.lease_renewed", partitions=assigned)
                await self._reread(set(self.assigned))

    async def _sweep(self) -> None:
        """Delete the ``done`` records of this instance's partitions once their grace
        period is over (:meth:`~argbridge.cluster.table.PartitionTable.expired`)."""
        period = max(0.05, min(self.finished_grace / 4, 60.0))
        while True:
            await self.clock.sleep(period)
            for p in sorted(self.assigned - set(self._catching_up)):
                table = self.tables.get(p)
                if table is None:
                    continue
                for record in table.expired(self.clock.time(), self.finished_grace):
                    try:
                        with anyio.fail_after(self.config.request_timeout):
                            if not await self.delete(record):
                                break
                    except (KafkaError, TimeoutError) as exc:
                        self.log.warning(
                            "cluster.delete_failed", key=record.key, error=type(exc).__name__
                        )
                        break

    async def _watchdog(self) -> None:
        """Stop every stream once the lease lapsed (see the module docstring)."""
        while True:
            if self.assigned and not self.cut_off and self.clock.monotonic() >= self.lease_until:
                self.cut_off = True
                if self.owned:
                    self.metrics.cut_offs.inc()
                    self.log.warning(
                        "cluster.cut_off",
                        runs=len(self.owned),
                        lapsed_for=round(self.clock.monotonic() - self.lease_until, 3),
                    )
                    await self._stop_owned(set(self.owned))
                continue
            wait = (
                max(0.0, self.lease_until - self.clock.monotonic())
                if self.assigned and not self.cut_off
                else None
            )
            changed = self._changed
            with anyio.move_on_after(
                min(wait, self.config.heartbeat_interval)
                if wait is not None
                else self.config.heartbeat_interval
            ):
                await changed.wait()
            if changed.is_set():
                self._changed = anyio.Event()

    # -- status ---------------------------------------------------------------------------

    async def cluster_view(self) -> dict[str, Any]:
        """The group's members and every record of the control topic, read now (for
        ``argbridge status``; bounded by ``request_timeout``)."""
        return await cluster_view(self.config, self.topic, self.client_id)

    def status(self) -> dict[str, Any]:
        """This instance's part: its partitions, rebalances, lease and owned runs."""
        return {
            "instance_id": self.instance_id,
            "group": self.config.group_id("control"),
            "topic": self.topic,
            "partitions": sorted(self.assigned),
            "catching_up": sorted(self._catching_up),
            "rebalances": self.rebalances,
            "cut_off": self.cut_off,
            "lease_valid": self.lease_valid(),
            "owned": sorted(
                (
                    {**o.lease.record.to_json(), "partition": o.partition}
                    for o in self.owned.values()
                ),
                key=lambda r: (r["source"], r["stream"], r["id"]),
            ),
        }
