"""``/metrics`` of a running daemon after a delivery (on the control socket, where it is
served by default), and ``/readyz`` naming what is not ready (on the webhook listener)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from argbridge.runtime import App
from tests.conftest import free_port
from tests.support.ops import (
    all_delivered,
    base_url,
    control_client,
    ops_settings,
    running,
    wait_until,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str):
    return found.get((name, tuple(sorted(labels.items()))))


async def test_metrics_after_a_delivery(tmp_path):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app):
        await wait_until(lambda: all_delivered(app))
        n = app.journal.last_seq
        records = await app.journal.read_after(0, 2)
        for record in records:
            await app.journal.dead_letter("file", record, "test", attempts=1)
        async with control_client(app) as client:
            response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        found = samples(response.text)
        sink = {"component": "file", "kind": "sink"}
        source = {"component": "sample", "kind": "source"}
        assert value(found, "argbridge_component_received_events_total", **source) == n
        assert value(found, "argbridge_component_received_events_total", **sink) == n
        assert value(found, "argbridge_component_sent_events_total", **sink) == n
        sent_bytes = value(found, "argbridge_component_sent_event_bytes_total", **sink)
        assert sent_bytes is not None and sent_bytes > 100 * n
        assert value(found, "argbridge_component_received_event_bytes_total", **sink) == sent_bytes
        assert value(found, "argbridge_journal_backlog_events", component="file") == 0
        assert value(found, "argbridge_journal_backlog_bytes") == 0
        assert value(found, "argbridge_journal_paused") == 0
        assert value(found, "argbridge_journal_last_seq") == n
        assert value(found, "argbridge_delivery_latency_seconds_count", component="file") == n
        assert value(found, "argbridge_sink_dead_letters", component="file") == 2
        assert value(found, "argbridge_sink_retries_pending", component="file") == 0
        # No error was counted for a clean delivery.
        assert not [k for k in found if k[0] == "argbridge_component_errors_total"]


async def test_metrics_count_errors_and_backlog_while_a_sink_cannot_start(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    app = App(
        ops_settings(
            tmp_path,
            free_port(),
            sinks={"file": {"type": "file", "path": str(blocker / "events.jsonl")}},
        ),
        handle_signals=False,
    )
    async with running(app):
        await wait_until(lambda: bool(getattr(app.sources["sample"], "finished", False)))
        async with control_client(app) as client:
            found = samples((await client.get("/metrics")).text)
        async with httpx.AsyncClient(base_url=base_url(app)) as client:
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
        n = app.journal.last_seq
        assert value(found, "argbridge_journal_backlog_events", component="file") == n
        errors = sum(
            v
            for (name, labels), v in found.items()
            if name == "argbridge_component_errors_total"
            and ("component", "file") in labels
            and ("kind", "sink") in labels
        )
        assert errors >= 1
        assert value(
            found, "argbridge_component_sent_events_total", component="file", kind="sink"
        ) in (
            None,
            0,
        )
        # Liveness stays green; readiness names the sink that is not ready.
        assert alive.status_code == 200
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready"
        assert body["not_ready"] == ["sink:file"]
        assert body["components"]["sink:file"]["ready"] is False
        assert body["components"]["sink:file"]["detail"].startswith("start: ")
        assert body["components"]["journal"]["ready"] is True
        assert body["components"]["source:sample"]["ready"] is True


async def test_readyz_ready_when_every_component_is(tmp_path):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app):
        await wait_until(lambda: app.workers["file"].started)
        async with httpx.AsyncClient(base_url=base_url(app)) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["not_ready"] == []


def test_the_batch_histogram_exposes_what_a_prometheus_histogram_does():
    """``delivery_latency`` takes a batch in one call; its exposition is the library
    Histogram's for the same observations (but ``_created``), negatives counted as 0."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from argbridge.metrics import LATENCY_BUCKETS, Metrics

    m = Metrics()
    reference = CollectorRegistry()
    h = Histogram(
        "argbridge_delivery_latency_seconds",
        "From journal commit to the destination's confirmation.",
        ["component"],
        buckets=LATENCY_BUCKETS,
        registry=reference,
    )
    values = [0.0005, 0.001, 0.001, 0.001, 0.003, 0.7, 1.0, 100.0, -1.0, 0.02, 60.0]
    m.delivery_latency.labels("k").observe_many(values)
    m.delivery_latency.labels("w").observe(0.2)
    for v in values:
        h.labels("k").observe(max(v, 0.0))
    h.labels("w").observe(0.2)

    def lines(text: bytes) -> list[str]:
        return [
            line
            for line in text.decode().splitlines()
            if "delivery_latency" in line and "_created" not in line
        ]

    assert lines(m.render()) == lines(generate_latest(reference))
