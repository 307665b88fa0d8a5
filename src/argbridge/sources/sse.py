"""The generic ``sse`` source: any ``text/event-stream`` (GET, or POST with a JSON body).

Owns the source and its :class:`SSEFollower`, on
:class:`~argbridge.sources.ssefollow.SSEFollowerBase` (the SSE transport the Arga
results follower uses too: the same :class:`~argbridge.sse.SSEDecoder`,
:class:`~argbridge.reconnect.ReconnectPolicy`, commit pipeline and
:class:`~argbridge.sources.follower.StreamFollower` skeleton):

- auth from :class:`~argbridge.config.streams.AuthConfig` (Bearer, ``X-API-Key``, a
  custom header; secret references, redacted);
- named events: ``event:`` becomes the type suffix (``<ce_type>.<event>``);
- ``id:`` → ``Last-Event-ID`` on reconnect, persisted in the state store once the
  events before it are committed, so a restart resumes; ``retry:`` is a floor under
  the backoff; 401/403 stop + alert, 404 stop + ``run_not_found`` alert, 429/5xx back
  off (``Retry-After``);
- at each (re)connect the optional ``gap_fill`` GETs a REST view of the run and emits
  it, ids from its content, so a live-only stream loses nothing and a repeat is
  dropped;
- ``terminal_events`` (event names) or a ``terminal`` JMESPath end the subscription;
  the stream is then remembered as done (a restart does not follow it again);
- the size cap (:mod:`argbridge.normalize.oversize`), counted and logged, and a memory
  bound (``max_frame_bytes``): a larger event is dropped while it arrives;
- with ``start``, the run is started first, at most once ever
  (:class:`~argbridge.sources.upstream.StartOnce`), and ``{run_id}`` in the URL or the
  body is the started run.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import jmespath.exceptions
import jmespath.parser
import orjson

from argbridge.compat.jmespath_eval import evaluate
from argbridge.config.settings import Settings
from argbridge.config.streams import SSESourceConfig
from argbridge.errors import EventError
from argbridge.events import CloudEvent, now_rfc3339
from argbridge.normalize.mapping import MappingError, compile_expression
from argbridge.normalize.stream import EventSpec, stream_event
from argbridge.reconnect import Decision, ReconnectPolicy
from argbridge.sources.base import SourceContext
from argbridge.sources.follower import AuthAlerter, StreamAlert, StreamSlots
from argbridge.sources.generic import GenericSource, note_replaced
from argbridge.sources.ssefollow import SSEFollowerBase
from argbridge.sources.state import StateStore
from argbridge.sources.upstream import (
    StartError,
    StartOnce,
    auth_headers,
    client,
    fill_run,
    safe_url,
    with_run,
)
from argbridge.sse import SSEDecoder, SSEEvent


def _true(expression: jmespath.parser.ParsedResult, payload: Any) -> bool:
    try:
        return bool(evaluate(expression, payload))
    except jmespath.exceptions.JMESPathError:
        return False


class SSEFollower(SSEFollowerBase):
    """One SSE subscription of a generic source."""

    def __init__(
        self,
        source: GenericSource,
        http: httpx.AsyncClient,
        ctx: SourceContext,
        spec: EventSpec,
        *,
        run_id: str,
        state: StateStore,
        policy: ReconnectPolicy,
        slots: StreamSlots,
        alert: StreamAlert,
    ) -> None:
        cfg = source.config
        assert isinstance(cfg, SSESourceConfig)
        prefix = f"sse:{source.name}:{run_id or '-'}"
        super().__init__(
            ctx,
            run_id or "-",
            stream="sse",
            log_ns="sse",
            state=state,
            last_id_key=f"{prefix}:last_id",
            policy=policy,
            slots=slots,
            alert=alert,
            max_frame=cfg.max_frame_bytes,
        )
        self.cfg = cfg
        self.http = http
        self.spec = spec
        self.run_id = run_id
        self.url = with_run(cfg.url, run_id) if run_id else cfg.url
        self.body = fill_run(cfg.body, run_id) if cfg.body is not None else None
        self.terminal_names = frozenset(cfg.terminal_events)
        self._terminal = compile_expression("terminal", cfg.terminal) if cfg.terminal else None
        self._throttle = source.throttle
        gap = cfg.gap_fill
        self._gap_items = (
            compile_expression("gap_fill.items", gap.items) if gap and gap.items else None
        )
        self.done_key = f"{prefix}:done"
        #: Events dispatched in the current session (ids of streams without ``id:``).
        self.position = 0

    def session_started(self) -> None:
        self.position = 0

    async def gap_fill(self) -> int:
        """Emit the REST view of the run (``gap_fill``), before each session reads; failures
        are logged, the live stream still runs."""
        gap = self.cfg.gap_fill
        if gap is None:
            return 0
        url = with_run(gap.url, self.run_id) if self.run_id else gap.url
        try:
            response = await self.http.get(url, headers={"accept": "application/json"})
        except httpx.TransportError as exc:
            self.log.warning("sse.gap_fill_failed", error=type(exc).__name__)
            return 0
        if response.status_code != 200:
            self.log.warning("sse.gap_fill_failed", status=response.status_code)
            return 0
        try:
            doc: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            self.ctx.reject("malformed_json", run_id=self.run_id, position="gap_fill")
            return 0
        found = evaluate(self._gap_items, doc) if self._gap_items is not None else doc
        payloads = found if self._gap_items is not None and isinstance(found, list) else [found]
        events: list[CloudEvent] = []
        now = now_rfc3339(self.ctx.clock.time())
        for payload in payloads:
            content = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
            try:
                event, _ = stream_event(
                    self.spec,
                    payload,
                    run=self.run_id,
                    event=gap.event,
                    position=0,
                    content=content,
                    # The same content is the same event, however often it is fetched.
                    upstream_id="gap:" + hashlib.sha256(content).hexdigest(),
                    now=now,
                )
            except (MappingError, EventError) as exc:
                self.ctx.reject("mapping_failed", run_id=self.run_id, error=str(exc))
                continue
            events.append(event)
        if not events:
            return 0
        statuses = await self.ctx.emit_many(events)
        new = sum(1 for st in statuses if st.value == "appended")
        if new:
            self.log.info("sse.gap_filled", new=new, seen=len(events) - new)
        return new

    async def finished(self) -> None:
        await self.state.set_state(self.done_key, "1")

    async def connect(self) -> Decision:
        request = self.http.build_request(
            self.cfg.method, self.url, headers=self.request_headers(), json=self.body
        )
        try:
            response = await self.http.send(request, stream=True)
            try:
                # Every session catches up first (a no-op without ``gap_fill``).
                return await self.sse_session(response, gap_fill=True)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            return self.policy.on_network_error(type(exc).__name__)

    def decode(self, events: list[SSEEvent], decoder: SSEDecoder) -> list[CloudEvent]:
        batch: list[CloudEvent] = []
        now = now_rfc3339(self.ctx.clock.time())
        for ev in events:
            position = self.position
            self.position += 1
            content = ev.data  # encoded only if hashed (a stream without ids)
            try:
                payload: Any = orjson.loads(content)
            except orjson.JSONDecodeError:
                self.ctx.reject(
                    "malformed_json", run_id=self.run_id, position=position, sse_event=ev.type
                )
                continue
            try:
                event, replaced = stream_event(
                    self.spec,
                    payload,
                    run=self.run_id,
                    event=ev.type,
                    position=position,
                    content=content,
                    upstream_id=ev.id if ev.own_id and ev.id else None,
                    now=now,
                )
            except (MappingError, EventError) as exc:
                self.ctx.reject(
                    "mapping_failed", run_id=self.run_id, position=position, error=str(exc)
                )
                continue
            if replaced:
                note_replaced(self.ctx, self._throttle, replaced, run_id=self.run_id)
            batch.append(event)
            if ev.type in self.terminal_names or (
                self._terminal is not None and _true(self._terminal, payload)
            ):
                self.terminal = True
                break
        return batch


class SSESource(GenericSource):
    """See the module docstring."""

    kind = "sse"

    def __init__(self, name: str, config: SSESourceConfig, settings: Settings) -> None:
        super().__init__(name, config, settings)
        self.cfg = config
        self.run_id = config.run_id or ""
        self.follower: SSEFollower | None = None
        self.alerter: AuthAlerter | None = None

    async def run(self, ctx: SourceContext) -> None:
        cfg = self.cfg
        state: StateStore = ctx.journal
        self.status = "starting"
        self.alerter = alerter = AuthAlerter(
            ctx, base_url=safe_url(cfg.url), vendor=cfg.vendor, log_ns="sse"
        )
        policy = self.new_policy()
        headers = {**cfg.headers, **auth_headers(cfg.auth)}
        async with client(headers, connect=cfg.connect_timeout, read=cfg.read_timeout) as http:
            if cfg.start is not None:
                run_id = await self._start(
                    ctx, http, StartOnce(self.name, cfg.start, state), policy
                )
                if run_id is None:
                    return
                self.run_id = run_id
            follower = SSEFollower(
                self,
                http,
                ctx,
                self.spec(
                    ctx, with_run(cfg.url, self.run_id) if self.run_id else cfg.url, self.run_id
                ),
                run_id=self.run_id,
                state=state,
                policy=policy,
                slots=StreamSlots(1),
                alert=alerter,
            )
            if await state.get_state(follower.done_key):
                ctx.log.info("sse.already_done", run_id=self.run_id or None)
                self.stop("done")
                return
            self.follower = follower
            self.status = "following"
            self.started.set()
            reason = await follower.run()
            self.stop(reason)

    async def _start(
        self,
        ctx: SourceContext,
        http: httpx.AsyncClient,
        starter: StartOnce,
        policy: ReconnectPolicy,
    ) -> str | None:
        """The started run's id (started now or before); ``None`` when the source
        stops (an auth failure alerts; other refusals are counted and logged)."""
        while True:
            try:
                run_id = await starter.run_id(http)
            except StartError as exc:
                if exc.retry:
                    decision = (
                        policy.on_network_error(exc.detail)
                        if exc.status is None
                        else policy.on_response(
                            exc.status, None, exc.retry_after, now=ctx.clock.time(), expect=""
                        )
                    )
                    if decision is not None and not decision.stops:
                        ctx.log.warning("sse.start_retry", reason=exc.reason, delay=decision.delay)
                        await ctx.clock.sleep(decision.delay)
                        continue
                if exc.reason == "auth_failed":
                    assert self.alerter is not None
                    await self.alerter("start", "start", exc.detail)
                else:
                    ctx.metrics.errors.labels(ctx.name, "source", exc.reason).inc()
                    ctx.log.error("sse.start_failed", reason=exc.reason, detail=exc.detail)
                self.stop(exc.reason, exc.detail)
                return None
            ctx.log.info("sse.run_started", run_id=run_id)
            return run_id
