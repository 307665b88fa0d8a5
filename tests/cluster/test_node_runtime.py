"""Cluster mode in the daemon: the runtime starts the ClusterNode when ``cluster.enabled``
and every accepted event reaches the events topic (Apache Kafka), besides the user's
sinks; the node's health is on ``/readyz``; its cursor survives a reload."""

from __future__ import annotations

import anyio
import pytest

from argbridge.cluster.events import EVENTS_SINK
from argbridge.config.settings import load_settings
from argbridge.config.webhooks import ArgusWebhookSourceConfig
from argbridge.runtime import App
from tests.conftest import free_port, make_event
from tests.support.cluster import cluster_config
from tests.support.kafka_sink import decode
from tests.support.webhooks import (
    Running,
    incident_body,
    problem_of,
    running_app,
    sw_headers,
    webhook_settings,
)

pytestmark = pytest.mark.timeout(120)


async def records_of(r: Running) -> list[str]:
    """The ids of the events journaled so far."""
    return [rec.event.id for rec in await r.app.journal.read_after(0, 1000)]


async def warm_up(r: Running) -> int:
    """Post webhooks until Kafka acknowledges one within the test's short
    ``webhook_ack_timeout``: the producer is connected and knows the events topic. (The
    first request connects it, which can take longer than that timeout on a busy
    machine: then it is answered 503, or acknowledged by the journal with the fallback.)
    Returns how many were posted: each is journaled, so each reaches the topic."""
    posted = 0
    with anyio.fail_after(60):
        while True:
            body = incident_body(f"WARM-{posted}")
            resp = await r.post("argus", body, sw_headers(body, msg_id=f"msg_warm_{posted}"))
            posted += 1
            if resp.status_code == 200 and resp.json()["ack"] == "kafka":
                return posted


async def test_the_daemon_produces_accepted_webhooks_to_the_events_topic(tmp_path, kafka):
    cluster = cluster_config(kafka.bootstrap, webhook_ack="journal")
    s = webhook_settings(
        tmp_path,
        cluster=cluster,
        sinks={"f": {"type": "file", "path": str(tmp_path / "out.jsonl")}},
    )
    async with running_app(s) as r:
        node = r.app.cluster
        assert node is not None and node.instance_id
        ids = []
        for i in range(5):
            body = incident_body(f"INC-{i}")
            resp = await r.post("argus", body, sw_headers(body))
            assert resp.status_code == 200, resp.text
            ids.append(resp.json()["id"])
        with anyio.fail_after(60):
            await node.events.wait_acked(r.app.journal.last_seq)
        assert r.app.health()[EVENTS_SINK].ready
        assert set(r.app.journal.stats().cursors) == {"f", EVENTS_SINK}
        records = await kafka.consume(node.config.events_topic_name, 5)
    assert sorted(decode(rec).get_id() for rec in records) == sorted(ids)
    assert {rec.key for rec in records} == {f"INC-{i}".encode() for i in range(5)}


async def test_cluster_mode_off_adds_nothing(tmp_path):
    async with running_app(webhook_settings(tmp_path)) as r:
        assert r.app.cluster is None
        assert EVENTS_SINK not in r.app.health()
        assert EVENTS_SINK not in r.app.journal.stats().cursors


def _config(tmp_path, sinks: str, deployment: str) -> str:
    return f"""
state_dir = "{tmp_path / "state"}"
[http]
enabled = false
[cluster]
enabled = true
deployment = "{deployment}"
bootstrap_servers = "127.0.0.1:{free_port()}"
{sinks}
"""


async def test_a_reload_keeps_the_events_cursor_and_cluster_keys_need_a_restart(tmp_path):
    one = '[sinks.f]\ntype = "file"\npath = "f.jsonl"\n'
    two = one + '[sinks.g]\ntype = "file"\npath = "g.jsonl"\n'
    path = tmp_path / "argbridge.toml"
    path.write_text(_config(tmp_path, one, "d1"))
    app = App(load_settings(path), handle_signals=False, config_path=path)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        with anyio.fail_after(30):
            await app.ready.wait()
            await app.journal.append(make_event(1))
            path.write_text(_config(tmp_path, two, "d2"))
            assert await app.reload()
            assert set(app.journal.stats().cursors) == {"f", "g", EVENTS_SINK}
            assert app.journal.backlog(EVENTS_SINK) == 1  # Kafka is not there: kept
            assert app.last_reload is not None
            assert app.settings.cluster.deployment == "d1"  # a restart-only key
            app.request_shutdown()
            await app.stopped.wait()


# -- cluster.webhook_ack = "kafka" --------------------------------------------------------


async def test_a_webhook_200_follows_the_events_topic_ack(tmp_path, kafka):
    s = webhook_settings(tmp_path, cluster=cluster_config(kafka.bootstrap))
    assert s.cluster.webhook_ack == "kafka"  # the cluster default
    async with running_app(s) as r:
        node = r.app.cluster
        assert node is not None
        body = incident_body("INC-1")
        resp = await r.post("argus", body, sw_headers(body, msg_id="msg_1"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["ack"] == "kafka" and resp.json()["status"] == "accepted"
        # Acknowledged means in the topic already: read it back right after the 200.
        assert node.events.acked_seq() >= 1
        [record] = await kafka.consume(node.config.events_topic_name, 1)
        assert decode(record).get_id() == resp.json()["id"]
        again = await r.post("argus", body, sw_headers(body, msg_id="msg_1"))
        assert again.json() == {**resp.json(), "status": "duplicate"}


async def test_kafka_unreachable_answers_503_and_the_retry_is_deduplicated(tmp_path, kafka):
    assert kafka.proxy is not None
    cluster = cluster_config(kafka.bootstrap_for("PROXIED"), webhook_ack_timeout=1.0)
    s = webhook_settings(tmp_path, cluster=cluster)
    async with running_app(s) as r:
        node = r.app.cluster
        assert node is not None
        warm = await warm_up(r)
        kafka.proxy.cut()
        try:
            body = incident_body("INC-1")
            headers = sw_headers(body, msg_id="msg_cut")
            resp = await r.post("argus", body, headers)
            assert resp.status_code == 503
            source = s.sources["argus"]
            assert isinstance(source, ArgusWebhookSourceConfig)
            assert resp.headers["retry-after"] == str(source.retry_after)
            problem = problem_of(resp)
            assert "did not acknowledge it within 1s" in problem["detail"]
            assert problem["id"] == (await records_of(r))[-1]
            # Once the readiness probe saw Kafka down, no wait: 503 at once.
            with anyio.fail_after(30):
                while node.events.unreachable is None:
                    await node.events.sink.kafka.next_probe()
            resp = await r.post("argus", body, headers)
            assert resp.status_code == 503
            assert "Kafka is unreachable" in problem_of(resp)["detail"]
        finally:
            kafka.proxy.restore()
        seq = await r.app.journal.log.seq_of(problem["id"])
        assert seq is not None
        with anyio.fail_after(60):
            await node.events.wait_acked(seq)
        retry = await r.post("argus", body, headers)
        assert retry.status_code == 200, retry.text
        assert retry.json() == {"status": "duplicate", "id": problem["id"], "ack": "kafka"}
        records = await kafka.consume(node.config.events_topic_name, warm + 1)
    ids = [decode(rec).get_id() for rec in records]
    assert ids.count(problem["id"]) == 1  # journaled once, produced once (idempotent)


async def test_fallback_to_journal_acknowledges_while_kafka_is_away(tmp_path, kafka):
    assert kafka.proxy is not None
    cluster = cluster_config(
        kafka.bootstrap_for("PROXIED"), webhook_ack_timeout=0.5, webhook_fallback_to_journal=True
    )
    async with running_app(webhook_settings(tmp_path, cluster=cluster)) as r:
        node = r.app.cluster
        assert node is not None
        warm = await warm_up(r)
        kafka.proxy.cut()
        try:
            body = incident_body("INC-1")
            resp = await r.post("argus", body, sw_headers(body))
            assert resp.status_code == 200
            assert resp.json()["ack"] == "journal"
        finally:
            kafka.proxy.restore()
        with anyio.fail_after(60):
            await node.events.wait_acked(r.app.journal.last_seq)
        records = await kafka.consume(node.config.events_topic_name, warm + 1)
    assert resp.json()["id"] in {decode(rec).get_id() for rec in records}


async def test_kafka_down_at_start_the_daemon_runs_and_catches_up(tmp_path, kafka):
    assert kafka.proxy is not None
    cluster = cluster_config(kafka.bootstrap_for("PROXIED"), webhook_ack_timeout=0.5)
    kafka.proxy.cut()
    try:
        async with running_app(webhook_settings(tmp_path, cluster=cluster)) as r:
            node = r.app.cluster
            assert node is not None
            assert not r.app.health()[EVENTS_SINK].ready
            body = incident_body("INC-1")
            headers = sw_headers(body, msg_id="msg_early")
            assert (await r.post("argus", body, headers)).status_code == 503
            kafka.proxy.restore()
            # The topic is made and the backlog produced once Kafka answers.
            with anyio.fail_after(60):
                await node.events.wait_acked(r.app.journal.last_seq)
            retry = await r.post("argus", body, headers)
            assert retry.json()["status"] == "duplicate" and retry.json()["ack"] == "kafka"
            assert r.app.health()[EVENTS_SINK].ready
            [record] = await kafka.consume(node.config.events_topic_name, 1)
            assert decode(record).get_id() == retry.json()["id"]
    finally:
        kafka.proxy.restore()


async def test_a_webhook_too_large_for_the_events_topic_is_refused_before_journaling(tmp_path):
    # No broker needed: the size is checked before the journal commit. The title is
    # both in the event's data and in the upstream payload it keeps: 2 x 600 KiB.
    cluster = cluster_config(f"127.0.0.1:{free_port()}", webhook_ack="journal")
    async with running_app(webhook_settings(tmp_path, cluster=cluster)) as r:
        body = incident_body("INC-1")
        big = body.replace(b"Checkout latency", b"t" * 600 * 1024)
        resp = await r.post("argus", big, sw_headers(big))
        assert resp.status_code == 413
        assert "max_record_bytes" in problem_of(resp)["detail"]
        assert await records_of(r) == []
        ok = await r.post("argus", body, sw_headers(body))
        assert ok.json()["ack"] == "journal"
