"""The generic ``poll`` source against a loopback listing that misbehaves."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.support.fake_streams import Listing, fake_upstream
from tests.support.generic import running
from tests.support.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(30)


def items(n: int, status: str = "queued") -> list[dict[str, Any]]:
    return [{"id": f"i{k}", "status": status, "n": k} for k in range(n)]


def poll_config(base: str, **overrides):
    cfg = {
        "type": "poll",
        "url": f"{base}/items",
        "ce_type": "acme.item",
        "interval": 60,
        "change_marker": "status",
        "reconnect": {"initial": 1, "max": 8},
    }
    cfg.update(overrides)
    return cfg


async def settle(r, clock: ManualClock) -> None:
    """Until the source sleeps for its interval (a poll ended)."""
    with anyio.fail_after(10):
        await clock.wait_sleeping()


async def test_pages_emit_each_item_once_and_a_change_once(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        listing = Listing(items(120))
        fake.add("GET", "/items", listing.handler)
        async with running(tmp_path, poll_config(fake.base), clock=clock) as r:
            await settle(r, clock)
            assert clock.pending == [60.0]
            events = await r.events()
            assert len(events) == 120
            assert len({e.id for e in events}) == 120
            assert events[0].type == "acme.item" and events[0].subject == "i0"
            # 3 pages + the first page read again (the listing did not move).
            assert [h.query["page"] for h in fake.hits("/items")] == ["1", "2", "3", "1"]
            assert fake.hits("/items")[0].query["size"] == "50"
            listing.items[70]["status"] = "done"
            clock.advance(60)
            await clock.wait_sleeping()
            events = await r.events()
            assert len(events) == 121
            assert events[-1].subject == "i70" and events[-1].data["marker"] == "done"
            assert r.source.polls == 2


async def test_item_that_moves_between_two_page_reads_is_not_missed(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        listing = Listing(items(60))

        def move(served: int) -> None:
            if served == 1:  # after page 1, before page 2: i55 changes and jumps to the top
                item = listing.items.pop(55)
                item["status"] = "failed"
                listing.items.insert(0, item)

        listing.between_pages = move
        fake.add("GET", "/items", listing.handler)
        async with running(tmp_path, poll_config(fake.base), clock=clock) as r:
            await settle(r, clock)
            events = await r.events()
            assert r.source.polls == 1 and r.source.rescans == 1
        seen = {(e.subject, e.data["marker"]) for e in events}
        assert ("i55", "failed") in seen
        assert {f"i{k}" for k in range(60)} <= {s for s, _ in seen}


@pytest.mark.parametrize("style", ["offset", "cursor"])
async def test_offset_and_cursor_pagination(tmp_path, style):
    clock = ManualClock()
    async with fake_upstream() as fake:
        fake.add("GET", "/items", Listing(items(25), style=style).handler)
        cfg = poll_config(fake.base, pagination={"style": style, "size": 10})
        async with running(tmp_path, cfg, clock=clock) as r:
            await settle(r, clock)
            assert len(await r.events()) == 25


async def test_429_retry_after_then_rate_limit_headers_are_followed(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        listing = Listing(
            items(3), headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "5"}
        )
        fake.add("GET", "/items", listing.handler)
        fake.fail("/items", 429, headers={"retry-after": "30"})
        async with running(tmp_path, poll_config(fake.base), clock=clock) as r:
            with anyio.fail_after(10):
                await clock.wait_sleeping()
                assert clock.pending == [30.0]
                await clock.advance_to_next()
                await clock.wait_sleeping()
                assert clock.pending == [5.0]  # the budget is spent: wait for the reset
                await clock.advance_to_next()
                await clock.wait_sleeping()
                assert clock.pending == [60.0]
            assert len(await r.events()) == 3


async def test_401_stops_with_an_alert(tmp_path):
    async with fake_upstream() as fake:
        fake.add("GET", "/items", Listing(items(3)).handler)
        fake.fail("/items", 401)
        async with running(tmp_path, poll_config(fake.base)) as r:
            with anyio.fail_after(10):
                await r.source.stopped.wait()
            assert [e.type for e in await r.events()] == ["argbridge.source.auth_failed"]
        assert len(fake.hits("/items")) == 1
        assert not r.source.health().ready


async def test_404_stops_with_a_run_not_found_alert(tmp_path):
    async with fake_upstream() as fake:
        fake.add("GET", "/items", Listing(items(3)).handler)
        fake.fail("/items", 404)
        async with running(tmp_path, poll_config(fake.base)) as r:
            with anyio.fail_after(10):
                await r.source.stopped.wait()
            assert [e.type for e in await r.events()] == ["argbridge.source.run_not_found"]
            assert r.metric("argbridge_source_auth_failures_total", component="src") == 0
        assert r.source.status == "not_found"
        assert not r.source.health().ready


async def test_5xx_backs_off_and_malformed_json_is_rejected(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        fake.add("GET", "/items", Listing(items(2)).handler)
        fake.fail("/items", 500)
        fake.fail("/items", 200, body=b"{oops")
        async with running(tmp_path, poll_config(fake.base), clock=clock) as r:
            with anyio.fail_after(10):
                await clock.wait_sleeping()
                assert clock.pending[0] <= 1.0  # backoff after the 500
                await clock.advance_to_next()
                await clock.wait_sleeping()
                assert clock.pending[0] == pytest.approx(60.0)  # malformed: next interval
                assert r.rejected("malformed_listing") == 1
                await clock.advance_to_next()
                await clock.wait_sleeping()
            assert len(await r.events()) == 2


async def test_a_server_that_ignores_paging_is_not_read_100_times(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        listing = Listing(items(50), style="none-but-full")  # always the same full page
        fake.add("GET", "/items", listing.handler)
        cfg = poll_config(fake.base, pagination={"style": "page", "size": 50})
        async with running(tmp_path, cfg, clock=clock) as r:
            await settle(r, clock)
            assert len(await r.events()) == 50
        assert len(fake.hits("/items")) <= 3
