"""The generic ``sse`` source against a misbehaving loopback SSE server."""

from __future__ import annotations

import hashlib

import anyio
import pytest

from argbridge.journal import Journal
from tests.support.fake_streams import SSEStream, fake_upstream, sse_frame
from tests.support.generic import running
from tests.support.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(30)


def sse_config(base: str, **overrides):
    cfg = {
        "type": "sse",
        "url": f"{base}/stream",
        "ce_type": "acme.ci",
        "reconnect": {"initial": 1, "max": 8},
    }
    cfg.update(overrides)
    return cfg


async def test_named_events_become_type_suffixes_and_resume_after_restart(tmp_path):
    async with fake_upstream() as fake:
        stream = SSEStream()
        fake.add("GET", "/stream", stream.handler)
        stream.publish(
            sse_frame({"status": "running"}, event="state_update", id="1"),
            sse_frame({"level": "info", "message": "hi"}, event="log", id="2"),
        )
        cfg = sse_config(fake.base, run_id="r1")
        async with Journal(tmp_path / "journal.db", sinks=["s"]) as j:
            async with running(tmp_path, cfg, journal=j) as r:
                events = await r.wait_events(2)
            assert [e.type for e in events] == ["acme.ci.state_update", "acme.ci.log"]
            assert events[0].subject == "r1" and events[0].partitionkey == "r1"
            assert events[1].data["upstream"] == {"level": "info", "message": "hi"}
            assert events[1].data["event"] == "log"
            # A restart resumes from the persisted Last-Event-ID.
            stream.publish(sse_frame({"passed": 1, "failed": 0}, event="complete", id="3"))
            async with running(tmp_path, cfg, journal=j) as r2:
                events = await r2.wait_events(3)
            assert [e.type for e in events][-1] == "acme.ci.complete"
        assert "last-event-id" not in fake.hits("/stream")[0].headers
        assert fake.hits("/stream")[-1].headers["last-event-id"] == "2"


async def test_post_with_body_and_api_key_header_secret_never_logged(tmp_path, monkeypatch):
    from tests.support.arga_fake import captured_logs

    monkeypatch.setenv("ACME_KEY", "sk-very-secret-123")
    async with fake_upstream() as fake:
        stream = SSEStream()
        fake.add("POST", "/stream", stream.handler)
        stream.publish(sse_frame({"x": 1}), end=True)
        cfg = sse_config(
            fake.base,
            method="POST",
            body={"run_id": "{run_id}", "verbose": True},
            run_id="r9",
            auth={"type": "api-key", "secret": "env:ACME_KEY"},
        )
        with captured_logs() as logs:
            async with running(tmp_path, cfg) as r:
                await r.wait_events(1)
                fake.fail("/stream", 500)
        request = fake.hits("/stream")[0]
        assert request.headers["x-api-key"] == "sk-very-secret-123"
        assert request.json() == {"run_id": "r9", "verbose": True}
        assert "sk-very-secret-123" not in logs.getvalue()
        assert "sk-very-secret-123" not in repr(r.source.config)


async def test_401_stops_with_one_alert_and_no_retry(tmp_path):
    async with fake_upstream() as fake:
        fake.add("GET", "/stream", SSEStream().handler)
        fake.fail("/stream", 401)
        async with running(tmp_path, sse_config(fake.base, vendor="Acme")) as r:
            with anyio.fail_after(10):
                await r.source.stopped.wait()
            events = await r.events()
        assert [e.type for e in events] == ["argbridge.source.auth_failed"]
        assert "Acme refused" in events[0].data["message"]
        assert len(fake.hits("/stream")) == 1
        assert not r.source.health().ready
        assert r.metric("argbridge_source_auth_failures_total", component="src") == 1


async def test_404_stops_with_a_run_not_found_alert(tmp_path):
    async with fake_upstream() as fake:
        async with running(tmp_path, sse_config(fake.base)) as r:
            with anyio.fail_after(10):
                await r.source.stopped.wait()
            assert r.source.status == "not_found"
            # A missing stream is an alert on it (issue 11), not an auth failure.
            assert [e.type for e in await r.events()] == ["argbridge.source.run_not_found"]
            assert r.metric("argbridge_source_auth_failures_total", component="src") == 0
            # The source's only stream is gone: the source does not do its job.
            assert not r.source.health().ready


async def test_429_retry_after_and_5xx_back_off_on_the_clock(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        stream = SSEStream()
        fake.add("GET", "/stream", stream.handler)
        fake.fail("/stream", 429, headers={"retry-after": "7"})
        fake.fail("/stream", 503)
        stream.publish(sse_frame({"ok": True}, id="1"))
        async with running(tmp_path, sse_config(fake.base), clock=clock) as r:
            with anyio.fail_after(10):
                await clock.wait_sleeping()
                assert clock.pending[0] >= 7.0
                await clock.advance_to_next()
                await clock.wait_sleeping()
                assert clock.pending[0] <= 8.0  # backoff, capped at reconnect.max
                await clock.advance_to_next()
            await r.wait_events(1)
        assert len(fake.hits("/stream")) == 3


async def test_malformed_json_is_a_counted_rejection(tmp_path):
    async with fake_upstream() as fake:
        stream = SSEStream()
        fake.add("GET", "/stream", stream.handler)
        stream.publish(sse_frame(b"{not json"), sse_frame({"n": 2}))
        async with running(tmp_path, sse_config(fake.base)) as r:
            events = await r.wait_events(1)
            assert r.rejected("malformed_json") == 1
        assert [e.data["upstream"] for e in events] == [{"n": 2}]


async def test_stream_dropped_mid_run_without_ids_replays_without_duplicates(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        stream = SSEStream(drop_after=2, resume=False)
        fake.add("GET", "/stream", stream.handler)
        frames = [sse_frame({"step": n}, event="log") for n in range(4)]
        stream.publish(*frames)
        async with running(tmp_path, sse_config(fake.base, run_id="r1"), clock=clock) as r:
            await r.wait_events(2)
            with anyio.fail_after(10):
                await clock.advance_to_next()  # the reconnect delay
            events = await r.wait_events(4)
            assert r.rejected("truncated_frame") == 1
        assert [e.data["upstream"]["step"] for e in events] == [0, 1, 2, 3]
        assert stream.sessions == 2
        dupes = r.metric(
            "argbridge_component_discarded_events_total",
            component="src",
            kind="source",
            reason="duplicate",
        )
        assert dupes == 2  # the replayed first two events were dropped by their ids


async def test_huge_screenshot_field_is_replaced_by_size_and_sha256(tmp_path):
    shot = "iVBORw0KGgo" + "A" * 3_000_000
    async with fake_upstream() as fake:
        stream = SSEStream()
        fake.add("GET", "/stream", stream.handler)
        stream.publish(sse_frame({"base64": shot, "step": 1}, event="screenshot"))
        async with running(tmp_path, sse_config(fake.base, max_event_bytes="64KiB")) as r:
            (event,) = await r.wait_events(1)
            replaced = r.rejected("oversized_field")
        assert replaced == 1
        marker = event.data["upstream"]["base64"]
        assert marker["omitted"] is True and marker["size"] == len(shot)
        assert marker["sha256"] == hashlib.sha256(shot.encode()).hexdigest()
        assert event.data["upstream"]["step"] == 1
        assert event.data["truncated"] == [
            {"path": "base64", "size": len(shot), "sha256": marker["sha256"]}
        ]
        assert len(event.to_json()) < 64 * 1024


async def test_terminal_event_ends_and_a_restart_does_not_follow_again(tmp_path):
    async with fake_upstream() as fake:
        stream = SSEStream()
        fake.add("GET", "/stream", stream.handler)
        stream.publish(
            sse_frame({"status": "running"}, event="state_update"),
            sse_frame({"passed": 2, "failed": 0}, event="complete"),
            sse_frame({"late": True}, event="log"),
        )
        cfg = sse_config(fake.base, run_id="r1", terminal_events=["complete"])
        async with Journal(tmp_path / "journal.db", sinks=["s"]) as j:
            async with running(tmp_path, cfg, journal=j) as r:
                with anyio.fail_after(10):
                    await r.done.wait()
                assert r.source.status == "done" and r.source.health().ready
                assert [e.type for e in await r.events()] == [
                    "acme.ci.state_update",
                    "acme.ci.complete",
                ]
            async with running(tmp_path, cfg, journal=j) as r2:
                with anyio.fail_after(10):
                    await r2.done.wait()
        assert stream.sessions == 1


async def test_mapping_sets_attributes_and_a_failing_mapping_is_a_rejection(tmp_path):
    async with fake_upstream() as fake:
        stream = SSEStream()
        fake.add("GET", "/stream", stream.handler)
        stream.publish(
            sse_frame({"build": {"id": 7, "at": 1_700_000_000}, "sev": "high"}),
            sse_frame({"build": {"id": 8, "at": "yesterday"}, "sev": "high"}),
            sse_frame({"build": {"id": 9, "at": 1_700_000_100}, "sev": "low"}),
        )
        mapping = {
            "id": "build.id",
            "subject": "join('-', ['build', to_string(build.id)])",
            "time": "build.at",
            "severity": "sev",
            "data": {"build": "build.id"},
        }
        async with running(tmp_path, sse_config(fake.base, mapping=mapping)) as r:
            events = await r.wait_events(2)
            assert r.rejected("mapping_failed") == 1
        assert [e.subject for e in events] == ["build-7", "build-9"]
        assert events[0].time == "2023-11-14T22:13:20.000Z"
        assert events[0].severity == "high" and events[1].severity == "low"
        assert events[0].data["build"] == 7


async def test_terminal_expression_ends_the_stream(tmp_path):
    async with fake_upstream() as fake:
        stream = SSEStream()
        fake.add("GET", "/stream", stream.handler)
        stream.publish(
            sse_frame({"type": "progress"}, id="1"),
            sse_frame({"type": "run_complete"}, id="2"),
        )
        cfg = sse_config(fake.base, terminal="starts_with(type, 'run_')")
        async with running(tmp_path, cfg) as r:
            with anyio.fail_after(10):
                await r.done.wait()
            assert len(await r.events()) == 2
        assert r.source.status == "done"


async def test_an_event_over_the_memory_bound_is_dropped_while_it_arrives(tmp_path):
    async with fake_upstream() as fake:
        stream = SSEStream()
        fake.add("GET", "/stream", stream.handler)
        stream.publish(
            sse_frame({"base64": "B" * 3_000_000}, event="screenshot", id="1"),
            sse_frame({"n": 2}, event="log", id="2"),
        )
        cfg = sse_config(fake.base, max_frame_bytes="1MiB", max_event_bytes="64KiB")
        async with running(tmp_path, cfg) as r:
            (event,) = await r.wait_events(1)
            assert r.rejected("frame_too_large") == 1
        assert event.data["upstream"] == {"n": 2}


async def test_server_retry_is_a_floor_under_the_reconnect_delay(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        stream = SSEStream(drop_after=2, half_frame=False)
        fake.add("GET", "/stream", stream.handler)
        stream.publish(b"retry: 5000\n\n", sse_frame({"n": 1}, id="1"), sse_frame({"n": 2}, id="2"))
        async with running(tmp_path, sse_config(fake.base), clock=clock) as r:
            await r.wait_events(1)
            with anyio.fail_after(10):
                await clock.wait_sleeping()
            assert clock.pending[0] >= 5.0  # not the 1 s backoff: the server's retry
            clock.advance(5)
            await r.wait_events(2)
        assert fake.hits("/stream")[-1].headers["last-event-id"] == "1"


async def test_gap_fill_catches_up_a_live_only_stream_and_drops_repeats(tmp_path):
    from tests.support.fake_streams import send_json

    clock = ManualClock()
    history: list[dict[str, int]] = [{"n": 1}]

    async def run_doc(request, send, receive):
        await send_json(send, 200, {"run": "r1", "events": history})

    async with fake_upstream() as fake:
        stream = SSEStream(drop_after=0, half_frame=False)  # the first session drops at once
        fake.add("GET", "/stream", stream.handler)
        stream.publish(sse_frame({"n": 3}, event="log"))
        fake.add("GET", "/runs/r1", run_doc)
        gap = {"url": f"{fake.base}/runs/{{run_id}}", "event": "log", "items": "events"}
        cfg = sse_config(fake.base, run_id="r1", gap_fill=gap)
        async with running(tmp_path, cfg, clock=clock) as r:
            await r.wait_events(1)  # the first session's catch-up, then the drop
            history.append({"n": 2})  # sent live while we were away
            with anyio.fail_after(10):
                await clock.advance_to_next()
            events = await r.wait_events(3)
        assert [e.data["upstream"] for e in events] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert {e.type for e in events} == {"acme.ci.log"}
        assert len(fake.hits("/runs/r1")) == 2
