"""The Kafka sink on secured listeners of a real broker (the ``kafka`` fixture's SSL with
required client certificates, SASL_SSL and SASL_PLAINTEXT with PLAIN and SCRAM users,
certificates by trustme): right settings deliver; a wrong password or an untrusted
certificate is named in the error and in ``/readyz``, and the sink backs off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from argbridge.backoff import Backoff
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.sinks.base import SinkContext
from argbridge.sinks.kafka import KafkaSink
from tests.conftest import free_port, make_event, settings
from tests.support.apache_kafka import USERS, KafkaCluster
from tests.support.daemon import running_app
from tests.support.kafka_sink import decode, fresh, running_sink, sink_settings
from tests.support.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(120)


def secured(kafka: KafkaCluster, protocol: str, **keys: Any) -> dict[str, Any]:
    """Sink keys for ``protocol``'s listener (CA of the test's certificates)."""
    assert kafka.tls is not None
    cfg: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        cfg["ssl_cafile"] = str(kafka.tls.ca)
    if protocol == "SSL":
        cfg["ssl_certfile"] = str(kafka.tls.client_cert)
        cfg["ssl_keyfile"] = str(kafka.tls.client_key)
    if protocol.startswith("SASL"):
        cfg["sasl_mechanism"] = "SCRAM-SHA-512"
        cfg["sasl_username"] = "alice"
        cfg["sasl_password"] = USERS["alice"]
    return {"bootstrap_servers": kafka.bootstrap_for(protocol), **cfg, **keys}


async def delivers(tmp_path: Path, kafka: KafkaCluster, keys: dict[str, Any]) -> None:
    topic = fresh("secure")
    s = sink_settings(tmp_path, keys.pop("bootstrap_servers"), topic=topic, **keys)
    events = [make_event(i, partitionkey="run-1") for i in range(5)]
    async with running_sink(tmp_path, s) as run:
        await run.journal.append_many(events)
        await run.worker.caught_up()
        assert run.sink.health().ready, run.sink.health().detail
    records = await kafka.consume(topic, len(events))
    assert [decode(r).get_id() for r in records] == [e.id for e in events]


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_SSL", "PLAIN"),
        ("SASL_SSL", "SCRAM-SHA-256"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ],
)
async def test_sasl_mechanisms_deliver(tmp_path, kafka, protocol, mechanism):
    await delivers(tmp_path, kafka, secured(kafka, protocol, sasl_mechanism=mechanism))


async def test_mutual_tls_delivers_with_hostname_verification(tmp_path, kafka):
    keys = secured(kafka, "SSL")
    assert "ssl_check_hostname" not in keys  # on by default: the cert names 127.0.0.1
    await delivers(tmp_path, kafka, keys)


async def test_sasl_over_tls_on_the_oldest_supported_line(tmp_path, kafka_any):
    # The compatibility matrix (make soak adds 3.9): SCRAM over TLS, idempotent producer.
    await delivers(tmp_path, kafka_any, secured(kafka_any, "SASL_SSL"))


async def start_error(tmp_path: Path, keys: dict[str, Any]) -> tuple[str, str]:
    """What ``start`` raises and ``health`` says with these sink keys."""
    s = sink_settings(tmp_path, keys.pop("bootstrap_servers"), topic="never", **keys)
    async with Journal(tmp_path / "j.db", sinks=["k"]) as journal:
        sink = KafkaSink(s.sinks["k"], SinkContext("k", journal, Metrics()), s)  # type: ignore[arg-type]
        try:
            with pytest.raises(Exception) as info:
                await sink.start()
            health = sink.health()
            assert not health.ready
            return str(info.value), health.detail
        finally:
            await sink.aclose()


@pytest.mark.parametrize(
    ("protocol", "keys", "cause"),
    [
        ("SASL_SSL", {"sasl_password": "wrong"}, "authentication failed"),
        ("SASL_PLAINTEXT", {"sasl_mechanism": "PLAIN", "sasl_password": "x"}, "authentication"),
        ("SSL", {"ssl_cafile": "other_ca"}, "TLS certificate not trusted"),
        ("SASL_SSL", {"ssl_cafile": "other_ca"}, "TLS certificate not trusted"),
    ],
)
async def test_wrong_credentials_or_untrusted_certificate_are_named(
    tmp_path, kafka, protocol, keys, cause
):
    assert kafka.tls is not None
    if keys.get("ssl_cafile") == "other_ca":
        keys = {**keys, "ssl_cafile": str(kafka.tls.other_ca)}
    error, detail = await start_error(tmp_path, secured(kafka, protocol, **keys))
    assert cause in error and cause in detail
    for secret in ("wrong", USERS["alice"]):
        assert secret not in error and secret not in detail


async def test_missing_client_certificate_is_a_tls_failure(tmp_path, kafka):
    keys = secured(kafka, "SSL")
    del keys["ssl_certfile"], keys["ssl_keyfile"]
    error, _ = await start_error(tmp_path, keys)
    assert "TLS handshake failed" in error


async def test_wrong_password_backs_off_and_readyz_says_why(tmp_path, kafka):
    keys = secured(kafka, "SASL_SSL", sasl_password="wrong", retry_initial=0.5, retry_max=60)
    s = sink_settings(tmp_path, keys.pop("bootstrap_servers"), topic=fresh("auth"), **keys)
    clock = ManualClock()
    backoff = Backoff(base=0.5, cap=60.0, jitter=False)
    async with running_sink(tmp_path, s, clock=clock, backoff=backoff) as run:
        worker_delays: list[float] = []
        for _ in range(4):
            # Nothing happens until the test advances the clock: every new attempt
            # waits for its backoff, which doubles.
            await clock.wait_sleeping(2)  # the worker's backoff and the resume probe
            worker_delays.append(min(clock.pending))
            assert "authentication failed" in run.sink.health().detail
            clock.advance(min(clock.pending))
        assert worker_delays == [0.5, 1.0, 2.0, 4.0]
        # The resume probe does not hammer either: it waits retry_max between attempts.
        assert 60.0 in clock.sleeps
        errors = run.count(
            "argbridge_component_errors_total",
            component="k",
            kind="sink",
            error_type="SinkError",
        )
        assert errors == 4

    # The daemon's /readyz names the cause.
    sink = {"type": "kafka", "topic": fresh("auth"), **secured(kafka, "SASL_SSL")}
    sink["sasl_password"] = "wrong"
    app_settings = settings(
        tmp_path / "app", http={"enabled": True, "port": free_port()}, sinks={"k": sink}
    )
    async with running_app(app_settings) as (app, url), httpx.AsyncClient(base_url=url) as http:
        sink_obj = app.sinks["k"]
        with anyio.fail_after(30):
            while "authentication failed" not in sink_obj.health().detail:
                await sink_obj.next_probe()  # type: ignore[attr-defined]
        r = await http.get("/readyz")
        assert r.status_code == 503
        detail = r.json()["components"]["sink:k"]["detail"]
        assert "authentication failed" in detail and "wrong" not in detail


def loopback_alias() -> str:
    """A name of this machine that resolves to 127.0.0.1 but is not in the broker's
    certificate (which names localhost and 127.0.0.1)."""
    import socket

    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = ""
    if address != "127.0.0.1" or name in ("localhost", "127.0.0.1"):
        pytest.skip("this machine's hostname does not resolve to 127.0.0.1")
    return name


async def test_hostname_verification_is_on_by_default_and_can_be_turned_off(tmp_path, kafka):
    alias = loopback_alias()
    keys = secured(kafka, "SSL")
    keys["bootstrap_servers"] = keys["bootstrap_servers"].replace("127.0.0.1", alias)
    error, detail = await start_error(tmp_path, dict(keys))
    assert "TLS certificate not trusted" in detail and "mismatch" in error.lower(), error
    # Turned off, the same name works (the advertised listeners name 127.0.0.1).
    await delivers(tmp_path / "off", kafka, {**keys, "ssl_check_hostname": False})
