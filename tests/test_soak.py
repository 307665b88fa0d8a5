"""The 30-minute soak (issue 17 items 5 and 6): memory is flat after warm-up.

``make soak`` (``pytest -m soak``) runs it; a plain ``pytest`` run skips it (30 minutes).
``ARGBRIDGE_SOAK_MINUTES`` shortens or lengthens it.

The daemon runs as a subprocess (``argbridge run``) against Apache Kafka (the ``kafka``
fixture), the Arga simulator (in this process, on loopback) and a webhook sender (this
process): 200 validation runs streaming one ~500 B event a second each, plus 200 signed
Argus webhooks a second, every incident new (new keys, subjects, ids all the time: what
an unbounded cache keyed by them would grow with). The daemon (an outside process) is
sampled every 30 s: RSS, CPU time, delivered events. Asserted: growth under 5 MiB over
the last 20 minutes (two thirds of a shorter soak), every webhook accepted, everything
delivered at the end. Printed: the RSS curve, CPU per event and cores used.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from argbridge.simulator.arga import ArgaSimulator
from tests.support.apache_kafka import KafkaCluster, _free_ports
from tests.support.process import logged_daemon
from tests.support.procmem import smaps
from tests.support.webhook_load import drive, signed_request
from tests.support.webhooks import SECRET

MINUTES = float(os.environ.get("ARGBRIDGE_SOAK_MINUTES", "30"))
RUNS = 200
WEBHOOKS_PER_S = 200
SAMPLE_EVERY = 30.0
MiB = 1024 * 1024
TOKEN = "arga_sk_soak_0123456789abcdef"

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(MINUTES * 60 + 600))]


@pytest.fixture(autouse=True)
def _only_when_asked(request: pytest.FixtureRequest) -> None:
    if "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip(f"the {MINUTES:g}-minute soak runs with `make soak` (pytest -m soak)")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config(state: Path, port: int, bootstrap: str, sim_url: str, topic: str) -> str:
    runs = ", ".join(f'"soak-{n:03d}"' for n in range(RUNS))
    return f"""
state_dir = "{state}"
[log]
level = "warning"
format = "json"
[http]
enabled = true
host = "127.0.0.1"
port = {port}
[sources.arga]
type = "arga"
base_url = "{sim_url}"
api_key = "{TOKEN}"
poll_interval = 0
max_streams = {RUNS}
runs = [{runs}]
[sources.argus]
type = "argus-webhook"
secrets = ["{SECRET}"]
[sinks.kafka]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
[[routes]]
sinks = ["kafka"]
"""


async def status(client: httpx.AsyncClient) -> dict[str, Any]:
    doc: dict[str, Any] = (await client.get("/control/status")).json()
    return doc


async def until(client: httpx.AsyncClient, pred: Any, within: float) -> dict[str, Any]:
    """Poll the daemon (an outside process) on its observable state, with a deadline."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            doc = await status(client)
            if pred(doc):
                return doc
        assert time.monotonic() < deadline, "the daemon did not get there in time"
        await anyio.sleep(0.2)


async def test_soak_memory_is_flat_after_warm_up(tmp_path: Path, kafka: KafkaCluster):
    [port] = _free_ports(1)
    sim = ArgaSimulator(TOKEN, heartbeat=5.0)
    steps = int(MINUTES * 60) + 600  # a run outlives the soak: one event a second
    runs = [sim.add_validation_run(f"soak-{n:03d}", steps=steps, pad=400) for n in range(RUNS)]
    path = tmp_path / "argbridge.toml"
    end = time.monotonic() + MINUTES * 60
    samples: list[tuple[float, int, float, int]] = []
    kinds: list[dict[str, float]] = []  # where the RSS is, per sample (MiB by kind)
    sent_webhooks = accepted = 0
    async with sim.running():
        topic = f"soak-{uuid.uuid4().hex[:8]}"
        kafka.create_topic(topic, partitions=4)
        path.write_text(config(tmp_path / "state", port, kafka.bootstrap, sim.base_url, topic))
        with logged_daemon(path) as proc:
            # The control plane (status) is on the daemon's socket, not its public port.
            transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "state" / "control.sock"))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://argbridge", timeout=10
            ) as control:
                await until(control, lambda d: d["sinks"]["kafka"]["ready"], 60)

                async def publish() -> None:
                    while time.monotonic() < end:
                        for run in runs:
                            run.publish(1)
                        await anyio.sleep(1.0)

                async def webhooks() -> None:
                    nonlocal sent_webhooks, accepted
                    sent_webhooks, accepted = await drive(
                        port,
                        lambda n: signed_request(port, n, pad=200),
                        WEBHOOKS_PER_S,
                        until=end,
                        connections=16,
                    )

                async def sample() -> None:
                    doc = await status(control)
                    samples.append(
                        (
                            time.monotonic(),
                            rss(proc.pid),
                            cpu_seconds(proc.pid),
                            doc["sinks"]["kafka"]["sent"],
                        )
                    )
                    kinds.append(smaps(proc.pid))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(publish)
                    tg.start_soon(webhooks)
                    while time.monotonic() < end:
                        await sample()
                        await anyio.sleep(min(SAMPLE_EVERY, max(0.0, end - time.monotonic())))
                # The last sample at the end of the load: a soak shorter than one sampling
                # interval still has two samples (a span to divide CPU time by).
                await sample()
                done = await until(control, lambda d: d["sinks"]["kafka"]["backlog"] == 0, 120)
    t0 = samples[0][0]
    for (t, r, c, n), where in zip(samples, kinds, strict=True):
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(where.items()) if v >= 0.5)
        print(
            f"  {(t - t0) / 60:5.1f} min  RSS {r / MiB:6.1f} MiB  cpu {c:7.1f} s  sent {n}  "
            f"({parts} MiB)"
        )
    window = min(20.0, MINUTES * 2 / 3) * 60
    last = samples[-1]
    first = min(samples, key=lambda s: abs(last[0] - window - s[0]))
    growth = last[1] - first[1]
    cores = (last[2] - samples[0][2]) / (last[0] - t0)
    per_event = (last[2] - samples[0][2]) / max(1, last[3] - samples[0][3])
    # For the report only (the bound is on the two samples above): the least-squares
    # trend of the window's samples, which one sample's LevelDB compaction spike (its
    # mapped tables, see the breakdown) does not move much.
    span = [(t, r) for t, r, _, _ in samples if t >= first[0]]
    mt = sum(t for t, _ in span) / len(span)
    mr = sum(r for _, r in span) / len(span)
    var = sum((t - mt) ** 2 for t, _ in span)
    trend = sum((t - mt) * (r - mr) for t, r in span) / var * window if var else 0.0
    # LevelDB's mapped table files are clean page cache the kernel can drop; they swing
    # with compactions. Printed apart, for the report.
    tables = kinds[-1].get("leveldb-tables", 0.0) - kinds[samples.index(first)].get(
        "leveldb-tables", 0.0
    )
    print(
        f"soak {MINUTES:g} min: RSS {first[1] / MiB:.1f} -> {last[1] / MiB:.1f} MiB over the "
        f"last {window / 60:.3g} min ({growth / MiB:+.1f} MiB, of which LevelDB's mapped "
        f"tables {tables:+.1f} MiB; trend {trend / MiB:+.1f} MiB); "
        f"{cores:.3f} core, {per_event * 1e6:.0f} µs CPU/event; {sent_webhooks} webhooks, "
        f"{accepted} accepted"
    )
    assert accepted == sent_webhooks
    assert done["journal"]["last_seq"] >= accepted
    # Issue 17 item 5. Before the journal gave its engine's memory back at each trim
    # (a reopen: the mapped tables and memtable let go), the RSS stepped up with the
    # retained journal (+8.2 MiB on the v1 journal; +19.4, +24.8, +9.1, +8.5 MiB on v2)
    # and this was reported as an expected failure; since, +1.5 MiB (docs/operations.md).
    assert growth < 5 * MiB, (
        f"RSS grew {growth / MiB:+.1f} MiB over the last {window / 60:.3g} min (target < 5 MiB)"
    )
