"""Added latency of ``cluster.webhook_ack = "kafka"`` over ``"journal"``, in one run.

Run from the repository root: ``.venv/bin/python -m bench.bench_cluster_ack``
(``--quick``: a short smoke run; ``ARGBRIDGE_KAFKA_CACHE`` reuses fetched Kafka jars).

One Apache Kafka node (the newest 4.x, KRaft, from the tests' fixtures) on free loopback
ports. The daemon (``argbridge run``, a subprocess) in cluster mode with one Argus webhook
source; the events producer runs in both modes, so the one difference is what the 200
waits for: the journal commit (``"journal"``), or also the events topic's ack of the
event (``"kafka"``, acks=all, an idempotent producer, one replica here). The client (this
process, httpx over keep-alive connections) posts signed 1 KiB webhooks, signed before
the clock starts, in a closed loop: one request at a time (the latency of one webhook),
then ``--concurrency`` at a time. Latency is measured per request, from sending it to
its answer; the modes alternate ``--rounds`` times on fresh daemons and state dirs, and
the figures are over all rounds' requests. Every answer must be 200 (else the run fails).

Expected: the ack adds a produce round trip to the broker plus the worker's hop from the
journal commit to the producer (a read of the journal, a batch, the cursor ack), a few
ms on loopback; under concurrency the producer batches the webhooks that arrive while
one produce is in flight.
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import orjson
from standardwebhooks import Webhook
from tests.conftest import free_port
from tests.support.apache_kafka import KafkaCluster, start_kafka
from tests.support.process import Daemon

from bench.common import header, percentile, row

SECRET = "whsec_" + base64.b64encode(b"bench-cluster-ack-secret-0123456").decode()
PAD = "x" * 800  # ≈ 1 KiB bodies


def config(root: Path, kafka: KafkaCluster, mode: str) -> Path:
    port = free_port()
    path = root / f"{mode}-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(
        f"""
state_dir = "{path.with_suffix("")}"
[log]
level = "info"
format = "json"
[http]
enabled = true
host = "127.0.0.1"
port = {port}
[sources.argus]
type = "argus-webhook"
secrets = ["{SECRET}"]
[cluster]
enabled = true
deployment = "bench-{uuid.uuid4().hex[:8]}"
bootstrap_servers = "{kafka.bootstrap}"
replication_factor = 1
events_partitions = 4
webhook_ack = "{mode}"
"""
    )
    return path


def signed(n: int) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(
        {
            "event": "incident.created",
            "incident": {
                "id": f"INC-{n % 64}",
                "title": "Checkout latency",
                "severity": "P2",
                "status": "open",
            },
            "pad": PAD,
        }
    )
    msg_id = f"msg_{uuid.uuid4().hex}"
    when = datetime.now(UTC)
    return body, {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, when, body.decode()),
    }


def port_of(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("port = "):
            return int(line.split("=")[1])
    raise ValueError("no port")


async def load(url: str, count: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies (ms) of ``count`` webhooks, ``concurrency`` at a time; and the rate."""
    requests = [signed(n) for n in range(count)]
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        queue = iter(requests)

        async def worker() -> None:
            for body, headers in queue:
                started = time.perf_counter()
                resp = await client.post(url, content=body, headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
                if resp.status_code != 200:
                    raise RuntimeError(f"{resp.status_code}: {resp.text}")

        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        elapsed = time.perf_counter() - began
    return latencies, count / elapsed


async def one_round(
    root: Path, kafka: KafkaCluster, mode: str, count: int, concurrency: int
) -> tuple[list[float], list[float], float]:
    path = config(root, kafka, mode)
    with Daemon(path) as daemon:
        port = port_of(path)
        await anyio.to_thread.run_sync(
            lambda: daemon.wait_for(
                lambda line: line.get("event") == "http.listening" and line.get("port") == port, 60
            )
        )
        url = f"http://127.0.0.1:{port}/webhooks/argus"
        # Warm-up: the events producer connected and the topic made, connections open.
        await load(url, 200, concurrency)
        one, _ = await load(url, count, 1)
        many, rate = await load(url, count, concurrency)
    return one, many, rate


async def main(args: argparse.Namespace) -> None:
    header('bench_cluster_ack: webhook_ack = "kafka" vs "journal" (added latency)')
    count = 300 if args.quick else args.requests
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="bench-cluster-ack-") as tmp:
        root = Path(tmp)
        kafka = start_kafka(root / "kafka")
        try:
            print(
                f"   Apache Kafka {kafka.version}, 1 node, started in {kafka.startup_seconds:.1f} s"
            )
            results: dict[str, tuple[list[float], list[float], list[float]]] = {
                "journal": ([], [], []),
                "kafka": ([], [], []),
            }
            for _ in range(rounds):
                for mode in ("journal", "kafka"):
                    one, many, rate = await one_round(root, kafka, mode, count, args.concurrency)
                    results[mode][0].extend(one)
                    results[mode][1].extend(many)
                    results[mode][2].append(rate)
            for mode, (one, many, rates) in results.items():
                row(
                    f'webhook_ack = "{mode}", 1 at a time',
                    f"p50 {percentile(one, 50):.2f} ms",
                    f"p99 {percentile(one, 99):.2f} ms over {len(one)} requests",
                )
                row(
                    f'webhook_ack = "{mode}", {args.concurrency} at a time',
                    f"p50 {percentile(many, 50):.2f} ms",
                    f"p99 {percentile(many, 99):.2f} ms; "
                    f"{', '.join(f'{r:,.0f}' for r in rates)} webhooks/s",
                )
            j, k = results["journal"], results["kafka"]
            for label, index in (("1 at a time", 0), (f"{args.concurrency} at a time", 1)):
                row(
                    f'added by "kafka", {label}',
                    f"p50 {percentile(k[index], 50) - percentile(j[index], 50):+.2f} ms",
                    f"p99 {percentile(k[index], 99) - percentile(j[index], 99):+.2f} ms",
                )
        finally:
            kafka.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    anyio.run(main, parser.parse_args())
