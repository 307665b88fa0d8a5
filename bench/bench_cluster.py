"""Cluster mode: handover time after a kill, and throughput with 1, 2 and 3 instances.

Run from the repository root: ``.venv/bin/python -m bench.bench_cluster``
(``--quick``: 2 kills and a smaller flood; ``ARGBRIDGE_KAFKA_CACHE`` reuses fetched jars).

One Apache Kafka node (the newest 4.x, KRaft, from the tests' fixtures) on free loopback
ports; the Arga simulator in this process; daemons (``argbridge run``) as subprocesses,
each discovering the simulator's runs (poll every 1 s) in cluster mode.

**Handover**: three daemons follow ``--runs`` validation runs that stream one event a
run every 0.25 s. ``--kills`` times: the daemon with the most open streams is killed
(kill -9); for each of its runs, the time from the kill to the first connection to that
run from another daemon (the simulator's attempt log) is one handover sample; then the
killed daemon is restarted and the cluster settles (every run followed, every daemon
following some) before the next kill. Session timeout and heartbeat interval are the
product defaults unless ``--session``/``--heartbeat`` say otherwise. Each kill is also
broken into phases: kill → the broker expires the member (its log) → the first survivor
revokes → the last survivor's revoke is done → assignment → the moved partitions are
re-read → the last moved run is connected (the daemons' log lines, ``--keep-logs DIR``
writes them out).

**Throughput**: 1, then 2, then 3 daemons (fresh deployment each) follow ``--flood-runs``
runs; once every run is followed and the group is settled, each run publishes
``--flood-events`` events at once; the figure is upstream events per second until the
events topic holds them all (SSE read, journal commit, events topic produce with
acks=all, positions recorded). Expected flat on this 2-core machine: the instances share
the same two cores (and the broker runs on them too), so adding instances adds no CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import anyio
import anyio.to_thread
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from tests.support.apache_kafka import KafkaCluster, start_kafka
from tests.support.cluster_daemons import arga_cluster_config
from tests.support.process import Daemon

from argbridge.config.cluster import ClusterConfig
from argbridge.simulator.arga import ArgaSimulator
from bench.common import header, median, percentile, row

#: The broker's line when a member's session expired (the new group coordinator, 4.x).
_EXPIRED = re.compile(r"^\[([^\]]+)\] INFO .*Member (\S+) in group (\S+) has failed")
PHASES = (
    ("kill -> coordinator expiry", "killed", "expired"),
    ("expiry -> first survivor hears of it (revoke)", "expired", "revoke"),
    ("first survivor's revoke -> last survivor's revoke done", "revoke", "revoked"),
    ("revoked -> assignment (join + sync)", "revoked", "assigned"),
    ("assignment -> partitions re-read", "assigned", "ready"),
    ("partitions re-read -> last lost run connected", "ready", "connected"),
)


def config(
    root: Path,
    kafka: KafkaCluster,
    sim: ArgaSimulator,
    dep: str,
    iid: str,
    *,
    session: float,
    heartbeat: float,
) -> Path:
    return arga_cluster_config(
        root / f"{dep}-{iid}.toml",
        root / dep / iid,
        kafka,
        sim,
        dep,
        iid,
        session=session,
        heartbeat=heartbeat,
        max_streams=200,
    )


def open_by(sim: ArgaSimulator, client: str) -> set[str]:
    return {a.run_id for a in sim.attempts if a.closed is None and a.client == client}


def settled(sim: ArgaSimulator, clients: str, runs: int) -> bool:
    followed = {a.run_id for a in sim.attempts if a.closed is None}
    return len(followed) >= runs and all(open_by(sim, c) for c in clients)


async def ready(daemon: Daemon) -> None:
    await anyio.to_thread.run_sync(lambda: daemon.wait_event("daemon.ready", 90))


async def publish_forever(sim: ArgaSimulator, tick: float) -> None:
    while True:
        for run in sim.validation_runs.values():
            if not run.terminal:
                run.publish(1)
        sim.touch()
        await anyio.sleep(tick)


def _daemon_lines(
    daemon: Daemon, event: str, after: float
) -> list[tuple[float, dict[str, object]]]:
    """``event`` lines of ``daemon`` logged at or after wall time ``after``."""
    found: list[tuple[float, dict[str, object]]] = []
    for raw in list(daemon.raw):
        if f'"{event}"' not in raw:
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if line.get("event") != event:
            continue
        at = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()
        if at >= after:
            found.append((at, line))
    return found


def _expired_at(kafka: KafkaCluster, victim: str, after: float) -> float | None:
    """When the broker removed ``victim``'s control member after its session expired."""
    with open(kafka.nodes[0].log_file, errors="replace") as f:
        for text in f:
            m = _EXPIRED.match(text)
            if m and f"-control-{victim}-" in m.group(2) and m.group(3).endswith(".control"):
                at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if at >= after:
                    return at
    return None


def phases(
    kafka: KafkaCluster,
    survivors: list[Daemon],
    victim: str,
    killed: float,
    connected: float,
) -> dict[str, float]:
    """The wall times of one handover's phases (see :data:`PHASES`); the survivors'
    first revoke/assignment after the kill, and the last of their partitions ready."""
    marks: dict[str, float] = {"killed": killed, "connected": connected}
    expired = _expired_at(kafka, victim, killed - 1)
    if expired is not None:
        marks["expired"] = expired
    for name, event, pick in (
        ("revoke", "cluster.revoked", min),
        ("revoked", "cluster.revoke_done", max),
        ("assigned", "cluster.assigned", max),
    ):
        firsts = [lines[0][0] for d in survivors if (lines := _daemon_lines(d, event, killed))]
        if firsts:
            marks[name] = pick(firsts)
    assigned = marks.get("assigned", killed)
    ready = [
        (at, line)
        for d in survivors
        for at, line in _daemon_lines(d, "cluster.partition_ready", assigned - 0.001)
        if at <= connected
    ]
    if ready:
        marks["ready"] = max(at for at, _ in ready)
        # Not times: the largest partition rebuild (messages read, records kept).
        marks["read"] = max(float(str(line.get("read", 0))) for _, line in ready)
        marks["records"] = max(float(str(line.get("records", 0))) for _, line in ready)
    return marks


async def handover(args: argparse.Namespace, root: Path, kafka: KafkaCluster) -> None:
    dep = f"handover-{uuid.uuid4().hex[:6]}"
    samples: list[float] = []
    worst: list[float] = []
    marks: list[dict[str, float]] = []
    wall = time.time() - time.monotonic()
    sim = ArgaSimulator("bench-token-123456", heartbeat=1.0)
    async with sim.running():
        for n in range(args.runs):
            sim.add_validation_run(f"h{n:03d}", steps=100_000, published=1)
        paths = {
            c: config(root, kafka, sim, dep, c, session=args.session, heartbeat=args.heartbeat)
            for c in "abc"
        }
        daemons = {c: Daemon(p) for c, p in paths.items()}
        every = list(daemons.items())
        try:
            for d in daemons.values():
                await ready(d)
            async with anyio.create_task_group() as tg:
                tg.start_soon(publish_forever, sim, 0.25)
                for _ in range(args.kills):
                    with anyio.fail_after(180):
                        await sim.wait_until(lambda: settled(sim, "abc", args.runs))
                    # A settled group: no rebalance under way when the kill lands.
                    await anyio.sleep(2 * args.heartbeat)
                    victim = max("abc", key=lambda c: len(open_by(sim, c)))
                    lost = open_by(sim, victim)
                    daemons[victim].signal(signal.SIGKILL)
                    killed = time.monotonic()
                    await anyio.to_thread.run_sync(daemons[victim].proc.wait)

                    def moved(
                        lost: set[str] = lost, victim: str = victim, killed: float = killed
                    ) -> bool:
                        return all(
                            any(
                                a.run_id == r and a.client != victim and a.opened >= killed
                                for a in sim.attempts
                            )
                            for r in lost
                        )

                    with anyio.fail_after(180):
                        await sim.wait_until(moved)
                    times = [
                        min(
                            a.opened
                            for a in sim.attempts
                            if a.run_id == r and a.client != victim and a.opened >= killed
                        )
                        - killed
                        for r in lost
                    ]
                    samples.extend(times)
                    worst.append(max(times))
                    marks.append(
                        phases(
                            kafka,
                            [d for c, d in daemons.items() if c != victim],
                            victim,
                            killed + wall,
                            killed + wall + max(times),
                        )
                    )
                    steps = ", ".join(
                        f"{a}->{b} {marks[-1][b] - marks[-1][a]:.2f}"
                        for _, a, b in PHASES
                        if a in marks[-1] and b in marks[-1]
                    )
                    print(
                        f"   kill {len(worst)}: {victim} ({len(lost)} runs) resumed elsewhere "
                        f"in {min(times):.2f}..{max(times):.2f} s ({steps}; largest partition "
                        f"re-read {marks[-1].get('read', 0):.0f} messages for "
                        f"{marks[-1].get('records', 0):.0f} records); "
                        f"load {os.getloadavg()[0]:.1f}"
                    )
                    daemons[victim] = Daemon(paths[victim])
                    every.append((victim, daemons[victim]))
                    await ready(daemons[victim])
                tg.cancel_scope.cancel()
        finally:
            for d in daemons.values():
                await anyio.to_thread.run_sync(d.stop)
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for n, (c, d) in enumerate(every):
                    (args.keep_logs / f"{n:02d}-{c}.log").write_text("".join(d.raw))
    row(
        f"handover after kill -9 (session {args.session:g} s, heartbeat {args.heartbeat:g} s)",
        f"p50 {percentile(samples, 50):.2f} s",
        f"p99 {percentile(samples, 99):.2f} s over {len(samples)} runs, {len(worst)} kills; "
        f"slowest run per kill p50 {percentile(worst, 50):.2f} s; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
    )
    for label, a, b in PHASES:
        spans = [m[b] - m[a] for m in marks if a in m and b in m]
        if spans:
            row(
                f"   {label}",
                f"median {median(spans):.2f} s",
                f"min {min(spans):.2f}, max {max(spans):.2f} over {len(spans)} kills",
            )


async def topic_size(kafka: KafkaCluster, topic: str) -> int:
    """Records in ``topic`` (the sum of its partitions' end offsets; 0 before it exists)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        parts = [p["partition"] for t in described for p in t.get("partitions") or []]
    finally:
        await admin.close()
    if not parts:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def throughput(args: argparse.Namespace, root: Path, kafka: KafkaCluster, n: int) -> None:
    dep = f"flood-{n}-{uuid.uuid4().hex[:6]}"
    sim = ArgaSimulator("bench-token-123456", heartbeat=1.0)
    steps = args.flood_events // 2
    async with sim.running():
        runs = [sim.add_validation_run(f"f{k:03d}", steps=steps) for k in range(args.flood_runs)]
        for run in runs:
            run.publish(1)
        clients = "abc"[:n]
        daemons = {
            c: Daemon(config(root, kafka, sim, dep, c, session=6, heartbeat=2)) for c in clients
        }
        try:
            for d in daemons.values():
                await ready(d)
            with anyio.fail_after(180):
                await sim.wait_until(lambda: settled(sim, clients, args.flood_runs))
            await anyio.sleep(4)  # a settled group (no rebalance under way)
            topic = f"{dep}.events"
            base = await topic_size(kafka, topic)
            print(f"   {n} instance(s) settled; events topic holds {base} records")
            events = sum(len(r.events) - 2 for r in runs)  # all but the first and the last
            started = time.monotonic()
            for run in runs:
                run.publish(len(run.events) - 2)
            sim.touch()
            deadline = started + 600
            # The broker is an outside process: polled on its observable state.
            while await topic_size(kafka, topic) < base + events and time.monotonic() < deadline:  # noqa: ASYNC110
                await anyio.sleep(0.2)
            elapsed = time.monotonic() - started
            got = await topic_size(kafka, topic) - base
        finally:
            for d in daemons.values():
                await anyio.to_thread.run_sync(d.stop)
    row(
        f"cluster throughput, {n} instance(s)",
        f"{events / elapsed:,.0f} events/s",
        f"{events:,} upstream events of {args.flood_runs} runs into the events topic in "
        f"{elapsed:.1f} s ({got:,} records)",
    )


async def main(args: argparse.Namespace) -> None:
    header("bench_cluster: handover time after kill -9; throughput with 1, 2, 3 instances")
    if args.quick:
        args.kills, args.session, args.heartbeat = 2, 6.0, 2.0
        args.flood_events = min(args.flood_events, 400)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        kafka = start_kafka(root / "kafka")
        try:
            print(
                f"   Apache Kafka {kafka.version}, 1 node, started in {kafka.startup_seconds:.1f} s"
            )
            if not args.skip_handover:
                await handover(args, root, kafka)
            if not args.skip_throughput:
                for n in (1, 2, 3):
                    await throughput(args, root, kafka, n)
        finally:
            kafka.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--runs", type=int, default=24)
    defaults = ClusterConfig()
    parser.add_argument("--session", type=float, default=defaults.session_timeout)
    parser.add_argument("--heartbeat", type=float, default=defaults.heartbeat_interval)
    parser.add_argument("--flood-runs", type=int, default=24)
    parser.add_argument("--flood-events", type=int, default=2000)
    parser.add_argument("--skip-handover", action="store_true")
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="write the handover daemons' logs here"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    anyio.run(main, parser.parse_args())
