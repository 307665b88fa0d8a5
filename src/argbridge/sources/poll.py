"""The generic ``poll`` source: GET a list endpoint on an interval, one event per new or
changed item.

Owns the polling loop. Each poll scans the listing page by page
(:class:`~argbridge.normalize.listing.Pager`: page/size, offset/limit or cursor) and
emits one event per item whose change marker (``status``, ``updated_at``…) it has not
seen; the id is deterministic from the item id and the marker, so re-polling emits
nothing new, even after a restart (the journal drops the duplicate).

Never missing an item that changed between pages: a scan of more than one page ends
by reading the first page again; when its items or markers differ from the first
read, the listing moved under us (an item changed and was re-sorted, or one was
removed and the rest shifted) and the scan runs again at once, up to
``consistency_retries`` times; whatever still moved is caught by the next poll, as
every changed item has a new marker.

Politeness: ``Retry-After`` on 429/503 and 5xx back off through
:class:`~argbridge.reconnect.ReconnectPolicy` and retry the scan; rate-limit headers
(``X-RateLimit-Remaining: 0`` + reset) pause before the next request; 401/403 stop
with an alert, 404 stops with a ``run_not_found`` alert; a malformed body is a counted
rejection and the poll is tried again at the next interval.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import orjson

from argbridge.config.settings import Settings
from argbridge.config.streams import PollSourceConfig
from argbridge.errors import EventError
from argbridge.events import CloudEvent, now_rfc3339
from argbridge.normalize.listing import ChangeTracker, ListingError, Page, Pager, rate_limit_wait
from argbridge.normalize.mapping import MappingError, identity_text
from argbridge.normalize.stream import EventSpec, item_event
from argbridge.reconnect import Action, Decision, ReconnectPolicy
from argbridge.sources.base import SourceContext
from argbridge.sources.follower import AuthAlerter
from argbridge.sources.generic import GenericSource, note_replaced
from argbridge.sources.upstream import auth_headers, client, safe_url


def upstream_error(body: bytes) -> str:
    """What an error body says, for logs and alerts: Argos Omni's
    ``{"error": {"code", "status", "message"}}``, ``{"detail"}`` or ``{"message"}``."""
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(doc, dict):
        return ""
    err = doc.get("error")
    if isinstance(err, dict):
        parts = [str(err[k]) for k in ("code", "message") if isinstance(err.get(k), str | int)]
        return " ".join(parts)[:200]
    for key in ("detail", "message", "error"):
        if isinstance(doc.get(key), str):
            return str(doc[key])[:200]
    return ""


class _Stop(Exception):
    def __init__(self, decision: Decision) -> None:
        self.decision = decision


class PollSource(GenericSource):
    """See the module docstring."""

    kind = "poll"

    def __init__(self, name: str, config: PollSourceConfig, settings: Settings) -> None:
        super().__init__(name, config, settings)
        self.cfg = config
        self.pager = Pager(config.pagination, config.items, config.item_id, config.change_marker)
        self.tracker = ChangeTracker()
        self.polls = 0
        self.rescans = 0
        self.requests = 0

    async def run(self, ctx: SourceContext) -> None:
        cfg = self.cfg
        policy = self.new_policy()
        alert = AuthAlerter(ctx, base_url=safe_url(cfg.url), vendor=cfg.vendor, log_ns="poll")
        spec = self.spec(ctx, cfg.url)
        headers = {"accept": "application/json", **cfg.headers, **auth_headers(cfg.auth)}
        async with client(headers, connect=cfg.connect_timeout, read=cfg.read_timeout) as http:
            self.status = "polling"
            self.started.set()
            while True:
                await ctx.wait_ready()
                try:
                    new = await self.poll_once(ctx, http, spec, policy)
                except _Stop as stop:
                    decision = stop.decision
                    if decision.stops:
                        if decision.alert or decision.reason == "not_found":
                            # Refused, or the listing is gone: an alert (issue 11).
                            missing = not decision.alert
                            await alert(safe_url(cfg.url), "poll", decision.detail, missing=missing)
                        else:
                            ctx.metrics.errors.labels(ctx.name, "source", decision.reason).inc()
                            ctx.log.warning(
                                "poll.stopped", reason=decision.reason, detail=decision.detail
                            )
                        self.stop(decision.reason, decision.detail)
                        return
                    ctx.metrics.reconnects.labels(ctx.name).inc()
                    ctx.log.info(
                        "poll.retry", reason=decision.reason, delay=round(decision.delay, 3)
                    )
                    await ctx.clock.sleep(decision.delay)
                    continue
                self.polls += 1
                if new:
                    ctx.log.info("poll.new_items", new=new)
                await ctx.clock.sleep(cfg.interval)

    async def poll_once(
        self,
        ctx: SourceContext,
        http: httpx.AsyncClient,
        spec: EventSpec,
        policy: ReconnectPolicy,
    ) -> int:
        """One poll (scan, verify, rescan while the listing moved); returns the events
        that were new. Raises :class:`_Stop` with a decision to wait or stop; returns 0
        after a rejected (malformed) response."""
        new = 0
        for attempt in range(self.cfg.consistency_retries + 1):
            try:
                first, pages, count = await self._scan(ctx, http, spec, policy)
            except ListingError as exc:
                ctx.reject("malformed_listing", url=safe_url(self.cfg.url), error=str(exc))
                return new
            new += count
            if pages == 1:
                return new
            try:
                again = await self._page(ctx, http, policy, 0, None)
            except ListingError as exc:
                ctx.reject("malformed_listing", url=safe_url(self.cfg.url), error=str(exc))
                return new
            if again.fingerprint == first.fingerprint:
                return new
            self.rescans += 1
            ctx.log.info("poll.listing_moved", attempt=attempt + 1, pages=pages)
        return new

    async def _scan(
        self,
        ctx: SourceContext,
        http: httpx.AsyncClient,
        spec: EventSpec,
        policy: ReconnectPolicy,
    ) -> tuple[Page, int, int]:
        """Read every page; returns the first page, the pages read and the new events."""
        first: Page | None = None
        cursor: str | None = None
        new = 0
        index = 0
        previous = ""
        while True:
            page = await self._page(ctx, http, policy, index, cursor)
            if first is None:
                first = page
            elif page.items and page.fingerprint == previous:
                # The same page again: the server ignores the paging parameters.
                ctx.log.warning("poll.paging_ignored", url=safe_url(self.cfg.url), page=index)
                return first, index + 1, new
            previous = page.fingerprint
            new += await self._emit(ctx, spec, page)
            if self.pager.is_last(page, index):
                return first, index + 1, new
            cursor = page.next_cursor
            index += 1

    async def _page(
        self,
        ctx: SourceContext,
        http: httpx.AsyncClient,
        policy: ReconnectPolicy,
        index: int,
        cursor: str | None,
    ) -> Page:
        params = {**self.cfg.params, **self.pager.params(index, cursor)}
        self.requests += 1
        try:
            response = await http.get(self.cfg.url, params=params)
        except httpx.TransportError as exc:
            raise _Stop(policy.on_network_error(type(exc).__name__)) from None
        decision = policy.on_response(
            response.status_code,
            None,
            response.headers.get("retry-after"),
            now=ctx.clock.time(),
            expect="",
        )
        if decision is not None:
            if decision.action is Action.STOP and decision.reason == "not_found":
                decision = Decision(Action.STOP, "not_found", detail="listing not found")
            said = upstream_error(response.content)
            if said:
                detail = f"{decision.detail or f'HTTP {response.status_code}'}: {said}"
                decision = replace(decision, detail=detail)
            raise _Stop(decision)
        wait = rate_limit_wait(response.headers, ctx.clock.time())
        try:
            body: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ListingError("the response is not JSON") from None
        page = self.pager.page(body)
        policy.progressed()
        if wait:
            ctx.log.info("poll.rate_limited", wait=round(wait, 3))
            await ctx.clock.sleep(min(wait, 3600.0))
        return page

    async def _emit(self, ctx: SourceContext, spec: EventSpec, page: Page) -> int:
        events: list[CloudEvent] = []
        keys: list[tuple[str, str]] = []
        now = now_rfc3339(ctx.clock.time())
        for item in page.items:
            item_id, marker = self.pager.identity(item)
            if item_id is None or item_id == "":
                ctx.reject("item_without_id", url=safe_url(self.cfg.url))
                continue
            key, mark = identity_text(item_id), identity_text(marker)
            if not self.tracker.changed(key, mark) or (key, mark) in keys:
                continue
            try:
                size = len(orjson.dumps(item)) if spec.max_event_bytes else 0
                event, replaced = item_event(
                    spec, item, item_id=item_id, marker=marker, size=size, now=now
                )
            except (MappingError, EventError) as exc:
                ctx.reject("mapping_failed", item_id=key, error=str(exc))
                continue
            if replaced:
                note_replaced(ctx, self.throttle, replaced, item_id=key)
            events.append(event)
            keys.append((key, mark))
        if not events:
            return 0
        statuses = await ctx.emit_many(events)
        for key, mark in keys:
            self.tracker.remember(key, mark)
        return sum(1 for s in statuses if s.value == "appended")
