"""Cluster mode in the daemon: the runtime starts the ClusterNode when ``cluster.enabled``
and every accepted event reaches the events topic (Apache Kafka), besides the user's
sinks; the node's health is on ``/readyz``; its cursor survives a reload."""

from __future__ import annotations

import anyio
import pytest

from argbridge.cluster.events import EVENTS_SINK
from argbridge.config.settings import load_settings
from argbridge.runtime import App
from tests.conftest import free_port, make_event
from tests.support.cluster import cluster_config
from tests.support.kafka_sink import decode
from tests.support.webhooks import incident_body, running_app, sw_headers, webhook_settings

pytestmark = pytest.mark.timeout(120)


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
