"""The generic ``websocket`` source: any feed of JSON messages, one message → one event.

Owns the source and its :class:`WebSocketFollower`, the WebSocket transport of the
shared :class:`~argbridge.sources.follower.StreamFollower` skeleton (the Arga demo-run
follower's sibling, through the same :func:`~argbridge.sources.wsconnect.ws_attempt`):

- auth in a header (Bearer, ``X-API-Key``, custom) or in the query (``?token=``), the
  secret registered with the log redactor and the URL never logged with its query;
- the message's event name from the ``event`` expression (default ``message``) and the
  mapping; a ``terminal`` expression that is true ends the subscription;
- the close-code policy of :class:`~argbridge.reconnect.ReconnectPolicy`: 1008 (and a
  401/403 handshake) → stop + alert, 4404 (or a 1008 "not found") → stop +
  ``run_not_found`` alert, others → backoff and reconnect;
- bounded queues (``websocket.max_queue``/``max_size``; a full queue stops reading);
- ids of messages without a mapped id: run + session number + position + content hash.
  The session number is persisted, so a live-only feed never collides with an earlier
  connection's messages.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import jmespath.exceptions
import jmespath.parser
import orjson
from websockets.asyncio.client import ClientConnection

from argbridge.compat.jmespath_eval import evaluate
from argbridge.config.settings import Settings
from argbridge.config.streams import WebSocketSourceConfig
from argbridge.errors import EventError
from argbridge.events import CloudEvent, now_rfc3339
from argbridge.normalize.mapping import MappingError, compile_expression
from argbridge.normalize.stream import EventSpec, stream_event
from argbridge.reconnect import Decision, ReconnectPolicy
from argbridge.sources.base import SourceContext
from argbridge.sources.follower import AuthAlerter, StreamAlert, StreamSlots
from argbridge.sources.generic import GenericSource, note_replaced
from argbridge.sources.pipeline import CommitPipeline
from argbridge.sources.state import StateStore
from argbridge.sources.upstream import auth_headers, auth_params, safe_url, with_run
from argbridge.sources.wsconnect import WsFollowerBase, WsOptions, ws_attempt


def _with_query(url: str, params: dict[str, str]) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


class WebSocketFollower(WsFollowerBase):
    """One WebSocket subscription of a generic source."""

    def __init__(
        self,
        source: WebSocketSource,
        ctx: SourceContext,
        spec: EventSpec,
        *,
        url: str,
        opts: WsOptions,
        run_id: str,
        state: StateStore,
        policy: ReconnectPolicy,
        slots: StreamSlots,
        alert: StreamAlert,
    ) -> None:
        super().__init__(
            ctx,
            run_id or "-",
            stream="websocket",
            policy=policy,
            slots=slots,
            alert=alert,
            log_ns="websocket",
        )
        cfg = source.cfg
        self.url = url
        self.opts = opts
        self.spec = spec
        self.run_id = run_id
        self.state = state
        self._throttle = source.throttle
        self._event: jmespath.parser.ParsedResult | None = (
            compile_expression("event", cfg.event) if cfg.event else None
        )
        self._terminal: jmespath.parser.ParsedResult | None = (
            compile_expression("terminal", cfg.terminal) if cfg.terminal else None
        )
        prefix = f"ws:{source.name}:{run_id or '-'}"
        self.session_key = f"{prefix}:sessions"
        self.done_key = f"{prefix}:done"
        self.session_no = 0
        self.position = 0
        self.done = False

    async def prepare(self) -> Decision | None:
        self.session_no = int(await self.state.get_state(self.session_key) or 0)
        return None

    async def finished(self) -> None:
        await self.state.set_state(self.done_key, "1")

    async def connect(self) -> Decision:
        return await ws_attempt(self.url, self.opts, self.policy, self.ctx.clock, self._ws_session)

    async def _ws_session(self, ws: ClientConnection) -> Decision:
        self.session_no += 1
        self.position = 0
        await self.state.set_state(self.session_key, str(self.session_no))

        async def read(pipe: CommitPipeline) -> Decision:
            return await self._read(ws, pipe)

        return await self.session(read, gap_fill=False)

    def _message(self, message: str | bytes) -> CloudEvent | None:
        position = self.position
        self.position += 1
        content = message
        try:
            payload: Any = orjson.loads(content)
        except orjson.JSONDecodeError:
            self.ctx.reject("malformed_json", run_id=self.run_id, position=position)
            return None
        try:
            name = self._search(self._event, payload, "event")
            event, replaced = stream_event(
                self.spec,
                payload,
                run=self.run_id,
                event=str(name) if isinstance(name, str | int) and name != "" else "message",
                position=position,
                content=content,
                upstream_id=f"s{self.session_no}:{position}",
                now=now_rfc3339(self.ctx.clock.time()),
            )
            terminal = bool(self._search(self._terminal, payload, "terminal"))
        except (MappingError, EventError) as exc:
            self.ctx.reject("mapping_failed", run_id=self.run_id, position=position, error=str(exc))
            return None
        if replaced:
            note_replaced(self.ctx, self._throttle, replaced, run_id=self.run_id)
        if terminal:
            self.done = True
        return event

    @staticmethod
    def _search(expr: jmespath.parser.ParsedResult | None, payload: Any, name: str) -> Any:
        if expr is None:
            return None
        try:
            return evaluate(expr, payload)
        except jmespath.exceptions.JMESPathError as exc:
            raise MappingError(name, str(exc).splitlines()[0]) from None


class WebSocketSource(GenericSource):
    """See the module docstring."""

    kind = "websocket"

    def __init__(self, name: str, config: WebSocketSourceConfig, settings: Settings) -> None:
        super().__init__(name, config, settings)
        self.cfg = config
        self.follower: WebSocketFollower | None = None

    async def run(self, ctx: SourceContext) -> None:
        cfg = self.cfg
        state: StateStore = ctx.journal
        run_id = cfg.run_id or ""
        url = with_run(cfg.url, run_id) if run_id else cfg.url
        alerter = AuthAlerter(ctx, base_url=safe_url(url), vendor=cfg.vendor, log_ns="websocket")
        follower = WebSocketFollower(
            self,
            ctx,
            self.spec(ctx, url, run_id),
            url=_with_query(url, auth_params(cfg.auth)),
            opts=WsOptions.of(cfg.websocket, {**cfg.headers, **auth_headers(cfg.auth)}),
            run_id=run_id,
            state=state,
            policy=self.new_policy(),
            slots=StreamSlots(1),
            alert=alerter,
        )
        if await state.get_state(follower.done_key):
            self.stop("done")
            return
        self.follower = follower
        self.status = "following"
        self.started.set()
        self.stop(await follower.run())
