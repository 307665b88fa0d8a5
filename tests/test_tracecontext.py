"""W3C trace context kept from inbound webhooks and forwarded by the sinks (issue 11
item 8): the pure rules, then the real daemon between a signed request, a real broker
(Tansu) and a real Standard Webhooks receiver."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import httpx
import orjson
import pytest

from argbridge.delivery.kafka_records import binary_parts, build_record
from argbridge.delivery.webhook_out import Signer, build_request
from argbridge.events import CloudEvent
from argbridge.journal import JournalRecord
from argbridge.journal.records import encode_event
from argbridge.tracecontext import trace_extensions, trace_headers, valid_traceparent, with_trace
from tests.conftest import free_port
from tests.support.apache_kafka import KafkaCluster
from tests.support.process import Daemon
from tests.support.receivers import WebhookReceiver, serve
from tests.support.tansu import Tansu
from tests.support.webhooks import SECRET, incident_body, sw_headers

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TS = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (TP, True),
        ("  " + TP + " ", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", False),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", False),
        ("", False),
        ("garbage", False),
    ],
)
def test_traceparent_rules(value: str, ok: bool):
    assert valid_traceparent(value) is ok


def test_tracestate_only_with_a_valid_parent_and_within_bounds():
    assert trace_extensions({"traceparent": TP, "tracestate": TS}) == {
        "traceparent": TP,
        "tracestate": TS,
    }
    assert trace_extensions({"tracestate": TS}) == {}
    assert trace_extensions({"traceparent": "bad", "tracestate": TS}) == {}
    assert trace_extensions({"traceparent": TP, "tracestate": "x" * 513}) == {"traceparent": TP}
    assert trace_extensions({"traceparent": TP, "tracestate": "é=1"}) == {"traceparent": TP}


EVENT = CloudEvent(id="e1", source="urn:s", type="argus.incident.created", data={"a": 1})


def test_the_event_carries_the_extension_and_the_sinks_forward_it():
    traced = with_trace(EVENT, {"traceparent": TP, "tracestate": TS})
    assert traced.extensions == {"traceparent": TP, "tracestate": TS}
    assert with_trace(EVENT, {}) is EVENT
    body = traced.to_json()
    assert orjson.loads(body)["traceparent"] == TP  # CloudEvents distributed tracing
    # Kafka, binary mode: the ce_ attributes and the W3C headers, on both paths.
    record = build_record(traced, "t")
    stored = JournalRecord.stored(1, 0.0, *encode_event(traced))
    parts = binary_parts(stored.attributes, stored.data_json)
    for headers in (record.headers, parts[2]):
        assert ("ce_traceparent", TP.encode()) in headers
        assert ("traceparent", TP.encode()) in headers
        assert ("tracestate", TS.encode()) in headers
    structured = build_record(traced, "t", "structured")
    assert ("traceparent", TP.encode()) in structured.headers
    assert "traceparent" not in dict(build_record(EVENT, "t").headers)
    # Outbound webhooks.
    request = build_request(traced, Signer(["whsec_" + "A" * 43 + "="]), 1_700_000_000)
    assert request.headers["traceparent"] == TP
    assert request.headers["tracestate"] == TS
    assert trace_headers(EVENT) == {}


@pytest.mark.slow
@pytest.mark.kafka
async def test_a_trace_spans_the_daemon_from_webhook_to_kafka_and_outbound_webhook(
    tmp_path: Path, broker: KafkaCluster | Tansu
):
    topic = f"traced-{uuid.uuid4().hex[:8]}"  # the broker outlives the test
    # Apache Kafka, or Tansu (no idempotence, no topic creation) where no JVM can run.
    apache = str(not isinstance(broker, Tansu)).lower()
    receiver = WebhookReceiver([SECRET])
    port = free_port()
    async with serve(receiver.router) as hook_base:
        config = tmp_path / "argbridge.toml"
        config.write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            '[log]\nlevel = "debug"\nformat = "json"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
            f'[sources.argus]\ntype = "argus-webhook"\nsecrets = ["{SECRET}"]\n'
            f'[sinks.kafka]\ntype = "kafka"\nbootstrap_servers = "{broker.bootstrap}"\n'
            f'topic = "{topic}"\nrequest_timeout = "2s"\ncall_timeout = "5s"\n'
            f"enable_idempotence = {apache}\ncreate_topics = {apache}\n"
            "topic_replication_factor = 1\n"
            f'[sinks.hooks]\ntype = "webhook"\nurl = "{hook_base}/hook"\n'
            f'secrets = ["{SECRET}"]\nallow_private = true\n'
        )
        with Daemon(config) as daemon:
            await anyio.to_thread.run_sync(daemon.wait_event, "http.listening")
            async with httpx.AsyncClient(timeout=10) as client:
                for n, extra in enumerate(
                    [{"traceparent": TP, "tracestate": TS}, {"traceparent": "junk"}]
                ):
                    body = incident_body(f"INC-{n}")
                    headers = {**sw_headers(body), **extra, "content-type": "application/json"}
                    response = await client.post(
                        f"http://127.0.0.1:{port}/webhooks/argus", content=body, headers=headers
                    )
                    assert response.status_code == 200, response.text
            with anyio.fail_after(20):
                await receiver.wait_for(2)
            records = await broker.consume(topic, 2)
            assert daemon.stop() == 0
    by_subject = {dict(r.headers)["ce_subject"]: dict(r.headers) for r in records}
    assert by_subject[b"INC-0"]["traceparent"] == TP.encode()
    assert by_subject[b"INC-0"]["tracestate"] == TS.encode()
    assert by_subject[b"INC-0"]["ce_traceparent"] == TP.encode()
    assert "traceparent" not in by_subject[b"INC-1"]
    hooks = {orjson.loads(r.body)["subject"]: r for r in receiver.received}
    assert hooks["INC-0"].headers["traceparent"] == TP
    assert hooks["INC-0"].headers["tracestate"] == TS
    assert orjson.loads(hooks["INC-0"].body)["traceparent"] == TP
    assert "traceparent" not in hooks["INC-1"].headers
