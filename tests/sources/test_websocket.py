"""The generic ``websocket`` source against a loopback WebSocket server."""

from __future__ import annotations

import anyio
import pytest

from tests.support.arga_fake import captured_logs
from tests.support.fake_streams import WsFeed, fake_upstream
from tests.support.generic import running
from tests.support.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(30)


def ws_config(base: str, **overrides):
    cfg = {
        "type": "websocket",
        "url": f"{base}/feed",
        "ce_type": "acme.feed",
        "event": "kind",
        "reconnect": {"initial": 1, "max": 8},
    }
    cfg.update(overrides)
    return cfg


async def test_messages_become_events_and_the_query_token_is_never_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("FEED_TOKEN", "tok-secret-98765")
    async with fake_upstream() as fake:
        feed = WsFeed([{"kind": "progress", "n": 1}, b"{broken", {"kind": "done", "n": 2}])
        fake.add("WS", "/feed", feed.handler)
        cfg = ws_config(
            fake.ws_base,
            run_id="d1",
            terminal="kind == 'done'",
            auth={"type": "query", "secret": "env:FEED_TOKEN"},
        )
        with captured_logs() as logs:
            async with running(tmp_path, cfg) as r:
                with anyio.fail_after(10):
                    await r.done.wait()
                events = await r.events()
                assert r.rejected("malformed_json") == 1
        assert [e.type for e in events] == ["acme.feed.progress", "acme.feed.done"]
        assert events[0].subject == "d1"
        assert r.source.status == "done"
        assert feed.tokens == ["tok-secret-98765"]
        assert "tok-secret-98765" not in logs.getvalue()


async def test_close_1008_stops_with_one_alert(tmp_path):
    async with fake_upstream() as fake:
        feed = WsFeed([], close=1008)
        fake.add("WS", "/feed", feed.handler)
        cfg = ws_config(fake.ws_base, auth={"type": "bearer", "secret": "abc-secret-1"})
        async with running(tmp_path, cfg) as r:
            with anyio.fail_after(10):
                await r.source.stopped.wait()
            assert [e.type for e in await r.events()] == ["argbridge.source.auth_failed"]
        assert feed.sessions == 1
        assert fake.hits("/feed")[0].headers["authorization"] == "Bearer abc-secret-1"
        assert not r.source.health().ready


async def test_abnormal_close_reconnects_with_backoff_and_new_ids(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        feed = WsFeed([{"kind": "tick"}], close=1011)
        fake.add("WS", "/feed", feed.handler)
        async with running(tmp_path, ws_config(fake.ws_base), clock=clock) as r:
            await r.wait_events(1)
            with anyio.fail_after(10):
                await clock.wait_sleeping()
                assert 0 <= clock.pending[0] <= 1.0
                await clock.advance_to_next()
            events = await r.wait_events(2)
        # The same message on a new connection is a new event (a live-only feed).
        assert events[0].id != events[1].id
        assert feed.sessions >= 2


async def test_close_4404_stops_with_a_run_not_found_alert(tmp_path):
    async with fake_upstream() as fake:
        async with running(tmp_path, ws_config(fake.ws_base)) as r:
            with anyio.fail_after(10):
                await r.source.stopped.wait()
            assert [e.type for e in await r.events()] == ["argbridge.source.run_not_found"]
            assert r.metric("argbridge_source_auth_failures_total", component="src") == 0
        assert r.source.status == "not_found"
