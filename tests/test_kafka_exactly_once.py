"""Exactly-once into Apache Kafka, end to end: the real daemon SIGKILLed again and again.

A replay source plays the packaged sample in a loop (deterministic ids per pass) at about
2,000 events/s into the daemon's journal; its Kafka sink runs with
``delivery = "exactly-once"``. The daemon is SIGKILLed at random moments — after a
random number of events (often inside a transaction), or right when it logs
``kafka.committed`` (between the commit and the journal cursor update) — and restarted
each time; in the three-broker test a partition leader is killed once too. A
``read_committed`` librdkafka consumer then reads every expected event exactly once; the
aborted records a ``read_uncommitted`` consumer sees are counted. The same loop in
``at-least-once`` mode prints its duplicates for comparison.

Waiting is event-driven: the daemon's JSON log lines, and the broker (an outside
process) read with a deadline. ``make test`` runs 3 kills on one broker, one at each
moment; ``make soak`` runs 5 kills and 20 kills with a leader kill in the three-broker
cluster, and the at-least-once comparison.
"""

from __future__ import annotations

import random
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.apache_kafka import KafkaCluster
from tests.support.eos_daemon import (
    SOURCES,
    ce_ids,
    expected_ids,
    read_until_complete,
    write_config,
    write_samples,
)
from tests.support.process import Daemon, NoLogLine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

#: Where the exactly-once loop kills, in turn.
STRATEGIES = ("committing", "events", "committed")


@dataclass
class Outcome:
    seen: Counter[str]
    uncommitted: int
    kills: list[str]
    rate: float


def wait_for(
    daemon: Daemon, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 90
) -> dict[str, Any]:
    """``daemon.wait_for``, naming what the daemon said last when it never comes."""
    try:
        return daemon.wait_for(predicate, timeout=timeout)
    except NoLogLine:
        raise AssertionError(
            f"no {what} within {timeout} s; last lines: {daemon.seen[-15:]}"
        ) from None


def wait_event(daemon: Daemon, name: str, timeout: float = 90, times: int = 1) -> None:
    """Wait for the ``times``-th ``name`` line from now (counted as they come: the lines
    must be read as fast as the daemon writes them, or a kill lands late), or until every
    replay source finished (what is left of the stream can hold fewer than ``times``:
    the kill then lands after the end, which is a moment like another)."""
    left = [times]
    finished = [0]

    def counted(line: dict[str, Any]) -> bool:
        event = line.get("event")
        if event == name:
            left[0] -= 1
        elif event == "replay.finished":
            finished[0] += 1
        return left[0] <= 0 or finished[0] >= SOURCES

    wait_for(daemon, f"{times} x {name}", counted, timeout)


def kill_loop(
    kafka: KafkaCluster,
    tmp_path: Path,
    *,
    delivery: str,
    kills: int,
    passes: int,
    seed: int,
    leader_kill: bool = False,
) -> Outcome:
    rng = random.Random(seed)
    topic = f"eos-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, partitions=4)
    config = write_config(
        tmp_path / "argbridge.toml",
        kafka,
        state=tmp_path / "state",
        topic=topic,
        progress=f"progress-{uuid.uuid4().hex[:8]}",
        delivery=delivery,
        passes=passes,
    )
    expected = expected_ids(write_samples(tmp_path), passes)
    done: list[str] = []
    rates: list[float] = []
    for n in range(kills):
        with Daemon(config) as daemon:
            daemon.wait_event("daemon.ready", timeout=60)
            started = time.monotonic()
            if leader_kill and n == kills // 2:
                # A partition leader dies under the running stream (kill -9).
                leader = kafka.leader_of(topic, 0)
                wait_event(daemon, _commit_event(delivery), timeout=60)
                kafka.node(leader).kill()
                killed_at, marks = time.monotonic(), daemon.count("sink.failed")
                wait_event(daemon, _commit_event(delivery), timeout=120)
                done.append(
                    f"leader {leader} killed (first commit after it in "
                    f"{time.monotonic() - killed_at:.1f} s, "
                    f"{daemon.count('sink.failed') - marks} failed attempts)"
                )
            strategy = STRATEGIES[n % len(STRATEGIES)] if delivery == "exactly-once" else "events"
            if strategy == "events":
                # A random moment (often inside a transaction).
                target = rng.randint(200, 2000)
                wait_event(daemon, "replay.event", times=target)
                how = f"after {target} events"
            else:
                # Right when the sink says it is about to commit (inside the transaction:
                # its records are written, not committed) or has committed (before the
                # journal cursor follows).
                nth = rng.randint(1, 8)
                wait_event(daemon, f"kafka.{strategy}", times=nth)
                how = f"at {strategy} #{nth}"
            elapsed = time.monotonic() - started
            rates.append(daemon.count("replay.event") / max(elapsed, 1e-3))
            daemon.signal(signal.SIGKILL)
            daemon.proc.wait(timeout=30)
            assert daemon.proc.returncode == -signal.SIGKILL
            done.append(how)
            if leader_kill and n == kills // 2:
                kafka.node(leader).start()
    for node in kafka.nodes:
        node.start()
    kafka.wait_ready()
    with Daemon(config) as daemon:
        for _ in range(SOURCES):
            daemon.wait_event("replay.finished", timeout=180)
        seen = read_until_complete(kafka, topic, expected, "read_committed")
    seen = ce_ids(kafka.read_all(topic, at_least=len(expected)))
    uncommitted = sum(ce_ids(kafka.read_all(topic, isolation="read_uncommitted")).values())
    missing = expected - set(seen)
    assert not missing, f"{len(missing)} expected events never reached Kafka"
    assert set(seen) == expected
    return Outcome(seen, uncommitted, done, sum(rates) / len(rates))


def _commit_event(delivery: str) -> str:
    return "kafka.committed" if delivery == "exactly-once" else "replay.event"


def report(label: str, out: Outcome) -> int:
    duplicates = sum(n - 1 for n in out.seen.values())
    committed = sum(out.seen.values())
    print(
        f"\n{label}: {len(out.seen)} events, {duplicates} duplicate(s) read_committed, "
        f"{out.uncommitted - committed} aborted record(s) seen read_uncommitted; "
        f"~{out.rate:.0f} ev/s appended while up; kills: {'; '.join(out.kills)}"
    )
    return duplicates


def test_exactly_once_through_a_sigkill_at_each_moment(tmp_path, kafka):
    """``make test``'s loop: one broker, one SIGKILL at each moment of ``STRATEGIES``
    (inside a transaction, between the commit and the cursor, after a random number of
    events). The longer loops (a leader kill in the three-broker cluster, 5 and 20
    SIGKILLs, the at-least-once comparison) run in ``make soak``."""
    out = kill_loop(kafka, tmp_path, delivery="exactly-once", kills=3, passes=100, seed=7)
    assert report("exactly-once, 1 broker, 3 SIGKILLs", out) == 0


@pytest.mark.soak
def test_exactly_once_through_sigkills_and_a_leader_failover(tmp_path, kafka_cluster):
    out = kill_loop(
        kafka_cluster,
        tmp_path,
        delivery="exactly-once",
        kills=5,
        passes=250,
        seed=13,
        leader_kill=True,
    )
    assert report("exactly-once, 3 brokers, 5 SIGKILLs + a leader kill", out) == 0


@pytest.mark.soak
def test_at_least_once_through_the_same_kills_prints_its_duplicates(tmp_path, kafka):
    out = kill_loop(kafka, tmp_path, delivery="at-least-once", kills=5, passes=100, seed=13)
    report("at-least-once, 1 broker, 5 SIGKILLs", out)


@pytest.mark.soak
def test_soak_exactly_once_through_20_sigkills(tmp_path, kafka_cluster):
    out = kill_loop(
        kafka_cluster,
        tmp_path,
        delivery="exactly-once",
        kills=20,
        passes=400,
        seed=1313,
        leader_kill=True,
    )
    assert report("soak: exactly-once, 3 brokers, 20 SIGKILLs + a leader kill", out) == 0


def test_a_zombie_with_the_same_instance_id_is_fenced_without_duplicates(tmp_path, kafka):
    """Daemon A runs; its state dir is copied (A frozen meanwhile) and daemon B starts on
    the copy with the same instance id and sink: B fences A. A, resumed, is refused on
    its next transaction and stops that sink with an error and an alert; B delivers
    everything once."""
    topic = f"zombie-{uuid.uuid4().hex[:8]}"
    kafka.create_topic(topic, partitions=4, replication=1)
    progress = f"progress-{uuid.uuid4().hex[:8]}"
    passes = 30
    common = {"topic": topic, "progress": progress, "delivery": "exactly-once", "passes": passes}
    config_a = write_config(tmp_path / "a.toml", kafka, state=tmp_path / "a", **common)  # type: ignore[arg-type]
    config_b = write_config(tmp_path / "b.toml", kafka, state=tmp_path / "b", **common)  # type: ignore[arg-type]
    with Daemon(config_a) as a:
        for _ in range(10):
            a.wait_event("kafka.committed", timeout=60)
        a.signal(signal.SIGSTOP)
        try:
            # The stopped daemon's state as it is on disk (its socket is no file to copy).
            shutil.copytree(
                tmp_path / "a", tmp_path / "b", ignore=shutil.ignore_patterns("control.sock")
            )
            with Daemon(config_b) as b:
                b.wait_event("kafka.transactional_connected", timeout=60)
                a.signal(signal.SIGCONT)
                line = a.wait_event("sink.stopped", timeout=90)
                assert "fenced" in line["reason"]
                assert a.count("kafka.fenced") == 1
                for _ in range(SOURCES):
                    b.wait_event("replay.finished", timeout=180)
                seen = read_until_complete(
                    kafka, topic, expected_ids(write_samples(tmp_path), passes), "read_committed"
                )
                assert b.count("kafka.fenced") == 0
        finally:
            a.signal(signal.SIGCONT)
    seen = ce_ids(kafka.read_all(topic, at_least=len(seen)))
    assert set(seen) == expected_ids(write_samples(tmp_path), passes)
    duplicates = sum(n - 1 for n in seen.values())
    print(f"\nzombie: {len(seen)} events, {duplicates} duplicate(s)")
    assert duplicates == 0
