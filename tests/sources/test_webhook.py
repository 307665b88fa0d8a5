"""The inbound webhook source against the running daemon: a real httpx client on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from argbridge.errors import ConfigError
from argbridge.journal import JournalRecord
from argbridge.runtime import App
from tests.support.webhooks import (
    OLD_SECRET,
    SECRET,
    Running,
    ShiftedClock,
    incident_body,
    problem_of,
    running_app,
    sw_headers,
    webhook_settings,
)


async def records(r: Running) -> list[JournalRecord]:
    out: list[JournalRecord] = await r.app.journal.read_after(0, 10_000)
    return out


# -- acceptance -------------------------------------------------------------------------


async def test_signed_incident_is_journaled_before_200(tmp_path: Path):
    async with running_app(webhook_settings(tmp_path)) as r:
        body = incident_body("INC-7")
        resp = await r.post("argus", body, sw_headers(body, msg_id="msg_a"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "accepted"
        # The 200 came after the commit: the event is readable right now.
        [rec] = await records(r)
        ev = rec.event
        assert ev.id == resp.json()["id"]
        assert ev.type == "argus.incident.created"
        assert ev.subject == ev.partitionkey == "INC-7"
        assert ev.severity == "P1"
        assert ev.data["title"] == "Checkout latency"
        assert ev.data["service"] == "svc-checkout"
        assert ev.data["team"] == "team-payments"
        assert ev.data["upstream"] == orjson.loads(body)


async def test_rotated_secrets_both_verify(tmp_path: Path):
    sources = {"argus": {"type": "argus-webhook", "secrets": [OLD_SECRET, SECRET]}}
    async with running_app(webhook_settings(tmp_path, sources)) as r:
        for i, secret in enumerate([OLD_SECRET, SECRET]):
            body = incident_body(f"INC-{i}")
            resp = await r.post("argus", body, sw_headers(body, secret=secret))
            assert resp.status_code == 200
        assert len(await records(r)) == 2


async def test_hmac_sha256_generic_source_hand_computed(tmp_path: Path):
    sources = {
        "gh": {
            "type": "webhook",
            "scheme": "hmac-sha256",
            "secrets": ["gh-secret"],
            "id_header": "X-GitHub-Delivery",
            "ce_type": "com.github.push",
            "subject_field": "ref",
        }
    }
    async with running_app(webhook_settings(tmp_path, sources)) as r:
        body = b'{"ref":"refs/heads/main","commits":[]}'
        digest = hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
        headers = {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": "guid-1"}
        resp = await r.post("gh", body, headers)
        assert resp.status_code == 200, resp.text
        [rec] = await records(r)
        assert rec.event.type == "com.github.push"
        assert rec.event.subject == "refs/heads/main"
        assert rec.event.data["delivery_id"] == "guid-1"
        # Same GUID again: a replay, 200 and no new event.
        again = await r.post("gh", body, headers)
        assert again.status_code == 200
        assert again.json()["status"] == "duplicate"
        assert len(await records(r)) == 1
        bad = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
        assert (await r.post("gh", body, bad)).status_code == 401


async def test_slack_v0_source(tmp_path: Path):
    sources = {"slack": {"type": "webhook", "scheme": "slack-v0", "secrets": ["sl-secret"]}}
    async with running_app(webhook_settings(tmp_path, sources)) as r:
        body = b'{"type":"event_callback","event_id":"Ev1"}'
        ts = str(int(time.time()))
        sig = hmac.new(b"sl-secret", f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
        headers = {"X-Slack-Signature": f"v0={sig}", "X-Slack-Request-Timestamp": ts}
        assert (await r.post("slack", body, headers)).status_code == 200
        # No id header: the body hash identifies the delivery (Slack retries resend it).
        assert (await r.post("slack", body, headers)).json()["status"] == "duplicate"
        assert len(await records(r)) == 1


# -- rejections ------------------------------------------------------------------------


async def test_signature_failures_are_401_without_detail(tmp_path: Path):
    wrong = "whsec_" + "d3Jvbmd3cm9uZ3dyb25nd3Jvbmd3cm9uZ3dyb25n"
    async with running_app(webhook_settings(tmp_path)) as r:
        body = incident_body()
        cases: dict[str, tuple[bytes, dict[str, str]]] = {
            "wrong secret": (body, sw_headers(body, secret=wrong)),
            "tampered body": (body.replace(b"P1", b"P4"), sw_headers(body)),
            "stale timestamp": (body, sw_headers(body, ts=time.time() - 400)),
            "future timestamp": (body, sw_headers(body, ts=time.time() + 400)),
            "missing headers": (body, {}),
            "no signature": (body, {k: v for k, v in sw_headers(body).items() if "sig" not in k}),
        }
        details = set()
        for name, (b, h) in cases.items():
            resp = await r.post("argus", b, h)
            assert resp.status_code == 401, name
            details.add(resp.text)
        # Every failure looks the same from outside (nothing that helps forging).
        assert len(details) == 1
        assert "secret" not in details.pop().lower()
        assert await records(r) == []


async def test_error_statuses(tmp_path: Path):
    sources = {"argus": {"type": "argus-webhook", "secrets": [SECRET], "max_body": "64KiB"}}
    async with running_app(webhook_settings(tmp_path, sources)) as r:
        # 400: signed, but not JSON.
        body = b"{not json"
        resp = await r.post("argus", body, sw_headers(body))
        assert resp.status_code == 400 and problem_of(resp)["title"] == "Bad Request"
        # 404: unknown source.
        body = incident_body()
        resp = await r.post("nope", body, sw_headers(body))
        assert resp.status_code == 404
        assert problem_of(resp)["title"] == "Unknown webhook source"
        # 405: wrong method on a known source.
        resp = await r.client.get(f"{r.base}/webhooks/argus")
        assert resp.status_code == 405 and resp.headers["allow"] == "POST"
        problem_of(resp)
        # 413: declared Content-Length over max_body (refused before reading it; the rest
        # is drained and dropped so that the client can read the answer).
        big = incident_body(pad=100 * 1024)
        resp = await r.post("argus", big, sw_headers(big))
        assert resp.status_code == 413 and resp.headers["connection"] == "close"
        problem_of(resp)
        # 415: wrong or missing content type.
        for ctype in ("text/plain", None, "application/x-www-form-urlencoded"):
            resp = await r.post("argus", body, sw_headers(body), content_type=ctype)
            assert resp.status_code == 415, ctype
            problem_of(resp)
        resp = await r.post("argus", body, sw_headers(body), "application/json; charset=utf-8")
        assert resp.status_code == 200
        # 422: valid JSON, wrong shape.
        for shape in (b"[1,2]", b'{"event":"incident.created"}', b'"x"', b'{"id":true}'):
            resp = await r.post("argus", shape, sw_headers(shape))
            assert resp.status_code == 422, shape
            problem_of(resp)
        assert len(await records(r)) == 1


async def test_generic_source_422_for_non_object(tmp_path: Path):
    sources = {"hook": {"type": "webhook", "secrets": [SECRET]}}
    async with running_app(webhook_settings(tmp_path, sources)) as r:
        resp = await r.post("hook", b"[]", sw_headers(b"[]"))
        assert resp.status_code == 422
        resp = await r.post("hook", b'{"a":1}', sw_headers(b'{"a":1}'))
        assert resp.status_code == 200
        [rec] = await records(r)
        assert rec.event.type == "webhook.received"
        assert rec.event.source == "urn:argbridge:webhook:hook"


# -- replay protection ----------------------------------------------------------------


async def test_replay_within_tolerance_is_200_and_not_reemitted(tmp_path: Path):
    clock = ShiftedClock()
    s = webhook_settings(tmp_path, journal={"retain_delivered": 0})
    async with running_app(s, clock) as r:
        body = incident_body()
        headers = sw_headers(body, msg_id="msg_replay")
        first = await r.post("argus", body, headers)
        assert first.json()["status"] == "accepted"
        again = await r.post("argus", body, headers)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate", "id": first.json()["id"]}
        assert len(await records(r)) == 1
        # Retention deletes the delivered event; its id stays as a tombstone, so a replay
        # later in the tolerance window is still recognised.
        clock.offset = 200
        assert await r.app.journal.run_retention() == 1
        assert await records(r) == []
        late = await r.post("argus", body, headers)
        assert late.status_code == 200 and late.json()["status"] == "duplicate"
        assert await records(r) == []
        # Past the tolerance the signature itself is refused.
        clock.offset = 301
        assert (await r.post("argus", body, headers)).status_code == 401
        assert r.app.journal.stats().appended == 1


def test_dedupe_window_must_cover_twice_the_tolerance(tmp_path: Path):
    # Checked when the settings load, so `argbridge check-config` reports it too.
    with pytest.raises(ConfigError) as info:
        webhook_settings(
            tmp_path,
            {"argus": {"type": "argus-webhook", "secrets": [SECRET], "tolerance": "10m"}},
            journal={"dedupe_window": "15m"},
        )
    assert dict(info.value.problems)["sources.argus.tolerance"] == (
        "replay protection needs journal.dedupe_window >= 2 x tolerance (900s < 2 x 600s)"
    )


def test_webhook_sources_need_the_http_listener(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        webhook_settings(
            tmp_path,
            {"argus": {"type": "argus-webhook", "secrets": [SECRET]}},
            http={"enabled": False},
        )
    assert dict(info.value.problems)["sources.argus"] == "webhook sources need http.enabled = true"


# -- streaming limits ------------------------------------------------------------------


async def _raw(port: int, head: bytes) -> anyio.abc.SocketStream:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    await stream.send(head)
    return stream


async def _read_response(stream: anyio.abc.SocketStream) -> bytes:
    data = b""
    with anyio.fail_after(5):
        while True:
            try:
                chunk = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data
            data += chunk


async def test_oversized_chunked_body_rejected_while_streaming(tmp_path: Path):
    sources = {"argus": {"type": "argus-webhook", "secrets": [SECRET], "max_body": "64KiB"}}
    async with running_app(webhook_settings(tmp_path, sources)) as r:
        assert r.app.http is not None and r.app.http.port is not None
        body = incident_body()
        head = "".join(f"{k}: {v}\r\n" for k, v in sw_headers(body).items())
        stream = await _raw(
            r.app.http.port,
            (
                "POST /webhooks/argus HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                f"{head}\r\n"
            ).encode(),
        )
        # Stream 80 KiB of a body that would be 10 MiB, then stop sending: the server
        # must answer 413 and close without waiting for (or buffering) the rest.
        chunk = b"x" * 16384
        sent = 0
        for _ in range(5):
            await stream.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        response = await _read_response(stream)
        assert response.startswith(b"HTTP/1.1 413 ")
        assert b"application/problem+json" in response
        assert sent < 10 * 1024 * 1024 // 100
        await stream.aclose()
        assert await records(r) == []


async def test_declared_oversize_refused_before_body_sent(tmp_path: Path):
    sources = {"argus": {"type": "argus-webhook", "secrets": [SECRET], "max_body": "64KiB"}}
    async with running_app(webhook_settings(tmp_path, sources)) as r:
        assert r.app.http is not None and r.app.http.port is not None
        stream = await _raw(
            r.app.http.port,
            b"POST /webhooks/argus HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n{",
        )
        # Only one byte of a declared 100 MiB was sent.
        response = await _read_response(stream)
        assert response.startswith(b"HTTP/1.1 413 ")
        assert b"connection: close" in response.lower()
        await stream.aclose()


async def test_slow_loris_body_gets_408(tmp_path: Path):
    sources = {"argus": {"type": "argus-webhook", "secrets": [SECRET], "body_timeout": 0.3}}
    async with running_app(webhook_settings(tmp_path, sources)) as r:
        assert r.app.http is not None and r.app.http.port is not None
        body = incident_body()
        head = "".join(f"{k}: {v}\r\n" for k, v in sw_headers(body).items())
        stream = await _raw(
            r.app.http.port,
            (
                "POST /webhooks/argus HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{head}\r\n"
            ).encode()
            + body[:10],
        )
        started = time.monotonic()
        response = await _read_response(stream)  # we never send the rest
        assert response.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 3
        await stream.aclose()
        assert await records(r) == []


# -- backpressure ----------------------------------------------------------------------


async def test_paused_journal_answers_503_and_accepts_nothing(tmp_path: Path):
    out_dir = tmp_path / "out"
    out_dir.write_text("a file where the sink wants a directory: it cannot start")
    s = webhook_settings(
        tmp_path,
        journal={"max_backlog_events": 2},
        sinks={"file": {"type": "file", "path": str(out_dir / "events.jsonl")}},
        routes=[{"sinks": ["file"]}],
        runtime={"restart_initial": 0.05, "restart_max": 0.2},
    )
    async with running_app(s) as r:
        for i in range(2):
            body = incident_body(f"INC-{i}")
            assert (await r.post("argus", body, sw_headers(body))).status_code == 200
        assert r.app.journal.pause.is_paused
        last = r.app.journal.last_seq
        bodies = [incident_body(f"INC-P{i}") for i in range(24)]
        signed = [(b, sw_headers(b)) for b in bodies]
        results: list[httpx.Response] = []

        async def one(b: bytes, h: dict[str, str]) -> None:
            results.append(await r.post("argus", b, h))

        async with anyio.create_task_group() as tg:
            for b, h in signed:
                tg.start_soon(one, b, h)
        assert [x.status_code for x in results] == [503] * len(bodies)
        assert all(x.headers["retry-after"] == "5" for x in results)
        problem_of(results[0])
        assert r.app.journal.last_seq == last  # nothing half-accepted
        ready = await r.client.get(f"{r.base}/readyz")
        assert "503" in ready.json()["components"]["source:argus"]["detail"]
        # The sink recovers, the backlog drains, the senders retry: all accepted once.
        out_dir.unlink()
        with anyio.fail_after(10):
            await r.app.journal.pause.wait_resumed()
        for b, h in signed:
            # A backlog bound of 2 pauses again whenever the sink is one event behind; a
            # sender honouring Retry-After waits until it drains (don't race the sink).
            with anyio.fail_after(10):
                await r.app.journal.pause.wait_resumed()
            resp = await r.post("argus", b, h)
            assert resp.status_code == 200 and resp.json()["status"] == "accepted"
        assert r.app.journal.last_seq == last + len(bodies)


# -- enrichment -------------------------------------------------------------------------


async def test_enrichment_attaches_similar_incidents(tmp_path: Path):
    from tests.support.fake_argus import fake_argus

    matches = [{"incident_id": "INC-1842", "score": 0.91, "title": "t", "severity": "P1"}]
    async with fake_argus({"matches": matches}) as argus:
        sources = {
            "argus": {
                "type": "argus-webhook",
                "secrets": [SECRET],
                "enrich_similar": True,
                "argus_base_url": argus.base,
                "argus_token": "tok",
            }
        }
        async with running_app(webhook_settings(tmp_path, sources)) as r:
            body = incident_body("INC-2287")
            resp = await r.post("argus", body, sw_headers(body))
            assert resp.status_code == 200
            with anyio.fail_after(5):
                while r.app.journal.last_seq < 2:
                    await r.app.journal.wait_for_events(r.app.journal.last_seq)
            created, similar = (rec.event for rec in await records(r))
            assert similar.type == "argus.incident.similar_found"
            assert similar.subject == "INC-2287"
            assert similar.data["matches"] == matches
            assert similar.data["for_event"] == created.id
            assert argus.requests == [("/api/v1/ai/similar-incidents/INC-2287", "Bearer tok")]
            # Updates are not enriched.
            body = incident_body("INC-2287", action="incident.updated")
            assert (await r.post("argus", body, sw_headers(body))).status_code == 200
            assert len(argus.requests) == 1


async def test_enrichment_failure_never_blocks_acceptance(tmp_path: Path):
    from tests.support.fake_argus import fake_argus

    async with fake_argus(None, hang=True) as argus:
        sources = {
            "argus": {
                "type": "argus-webhook",
                "secrets": [SECRET],
                "enrich_similar": True,
                "argus_base_url": argus.base,
                "enrich_timeout": 0.2,
            }
        }
        async with running_app(webhook_settings(tmp_path, sources)) as r:
            body = incident_body("INC-9")
            resp = await r.post("argus", body, sw_headers(body))
            assert resp.status_code == 200
            # Argus is still hanging on the enrichment call while we already have our 200.
            with anyio.fail_after(5):
                await argus.entered.wait()
            assert not argus.released.is_set()
            assert [rec.event.type for rec in await records(r)] == ["argus.incident.created"]


# -- property: no client input yields a 5xx ----------------------------------------------

_HEADER_NAMES = st.sampled_from(
    ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "x-custom"]
)
# Printable ASCII without surrounding whitespace (what HTTP/1.1 lets a client send).
_HEADER_VALUES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60
).map(str.strip)


@pytest.fixture(scope="module")
def threaded_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The daemon on its own event loop thread, so hypothesis can drive it synchronously."""
    s = webhook_settings(tmp_path_factory.mktemp("prop"))
    app = App(s, handle_signals=False)
    with start_blocking_portal() as portal:
        future = portal.start_task_soon(app.run)
        portal.call(app.ready.wait)
        assert app.http is not None
        portal.call(app.http.started.wait)
        with httpx.Client(base_url=f"http://127.0.0.1:{app.http.port}", timeout=10) as client:
            yield client
        portal.call(app.request_shutdown)
        future.result(timeout=10)


@hsettings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    headers=st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=5),
    body=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda o: json.dumps(o).encode(),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                lambda c: (
                    st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3)
                ),
                max_leaves=8,
            ),
        ),
    ),
    sign=st.booleans(),
    path=st.sampled_from(["argus", "argus", "nope", "argus/x"]),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
)
def test_random_requests_never_5xx(threaded_app, headers, body, sign, path, method):
    client: httpx.Client = threaded_app
    h = dict(headers)
    h.setdefault("content-type", "application/json")
    if sign:
        try:
            body.decode()
        except UnicodeDecodeError:
            pass
        else:
            h.update(sw_headers(body))
    resp = client.request(method, f"/webhooks/{path}", content=body, headers=h)
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        assert resp.headers["content-type"] == "application/problem+json"


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch):
    from argbridge.config.settings import load_settings

    for name in ("ARGUS_WEBHOOK_SECRET", "ARGUS_WEBHOOK_SECRET_OLD"):
        monkeypatch.setenv(name, SECRET)
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "gh")
    root = Path(__file__).resolve().parents[2]
    s = load_settings(root / "config" / "webhooks.example.toml")
    assert set(s.sources) == {"argus", "github"}


def test_bad_secret_is_a_config_error_naming_the_key(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        webhook_settings(tmp_path, {"argus": {"type": "argus-webhook", "secrets": ["whsec_!!"]}})
    assert "sources.argus" in str(info.value)
    assert "whsec_!!" not in str(info.value)


def test_id_header_is_refused_for_standard_webhooks(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        webhook_settings(
            tmp_path, {"argus": {"type": "argus-webhook", "secrets": [SECRET], "id_header": "X"}}
        )
    assert "signed webhook-id" in str(info.value)
