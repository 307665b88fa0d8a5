"""argbridge's own events have a home (issue 11 item 5): the real daemon, a real broker
(Tansu) and the Arga simulator refusing the daemon's key. The ``auth_failed`` alert lands
on the ``argbridge.ops`` topic; the data topic and the file sink only get data."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import orjson
import pytest

from tests.support.arga_fake import simulator
from tests.support.process import Daemon
from tests.support.tansu import Tansu

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


async def test_auth_failures_go_to_the_ops_topic_not_the_data_topic(tmp_path: Path, broker):
    # The broker outlives the test (Apache Kafka is shared by the session): fresh topics.
    ops_topic, data_topic = f"ops-{uuid.uuid4().hex[:8]}", f"events-{uuid.uuid4().hex[:8]}"
    # Apache Kafka, or Tansu (no idempotence, no topic creation) where no JVM can run.
    apache = str(not isinstance(broker, Tansu)).lower()
    async with simulator() as sim:
        config = tmp_path / "argbridge.toml"
        config.write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            '[log]\nlevel = "debug"\nformat = "json"\n[http]\nenabled = false\n'
            '[sources.sample]\ntype = "replay"\ninterval = 0\nkinds = ["sse"]\n'
            f'[sources.arga]\ntype = "arga"\nbase_url = "{sim.base_url}"\n'
            'api_key = "not-the-key"\npoll_interval = "1h"\ndiscover_demo = false\n'
            f'[sinks.kafka]\ntype = "kafka"\nbootstrap_servers = "{broker.bootstrap}"\n'
            f'topic = "{data_topic}"\nrequest_timeout = "2s"\ncall_timeout = "5s"\n'
            f"enable_idempotence = {apache}\ncreate_topics = {apache}\n"
            "topic_replication_factor = 1\n"
            '[sinks.file]\ntype = "file"\npath = "events.jsonl"\n'
            f'[ops]\ntopic = "{ops_topic}"\n'
        )
        with Daemon(config) as daemon:

            def alerted_and_drained() -> None:
                daemon.wait_event("arga.auth_failed")
                daemon.wait_event("replay.finished")

            await anyio.to_thread.run_sync(alerted_and_drained)
            [ops] = await broker.consume(ops_topic, 1)
            headers = dict(ops.headers)
            assert headers["ce_type"] == b"argbridge.source.auth_failed"
            data = await broker.consume(data_topic, 1)
            assert all(not dict(r.headers)["ce_type"].startswith(b"argbridge.") for r in data)

            def file_caught_up() -> None:
                daemon.wait_for(
                    lambda line: (
                        line.get("event") == "sink.caught_up"
                        and line.get("component") == "file"
                        and line.get("cursor", 0) > 1
                    )
                )

            await anyio.to_thread.run_sync(file_caught_up)
            assert daemon.stop() == 0
    lines = (tmp_path / "state" / "events.jsonl").read_bytes().splitlines()
    types = [orjson.loads(line)["type"] for line in lines]
    assert types and not any(t.startswith("argbridge.") for t in types)
