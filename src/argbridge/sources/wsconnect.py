"""One WebSocket connection attempt, shared by the Arga demo-runner and ``websocket`` sources.

Owns the ``websockets`` side of a :class:`~argbridge.sources.follower.StreamFollower`
attempt: one ``connect()`` (never the library's ``async for ws in connect()`` loop,
which reconnects with zero delay after an accepted-then-closed connection,
protocols.md §2) with keepalive pings, bounded ``max_size``/``max_queue`` (a full
queue stops reading: TCP backpressure), optional permessage-deflate, no proxy from
the environment; the mapping of the library's exceptions to a
:class:`~argbridge.reconnect.Decision` (a refused handshake by its HTTP status, a
close during the handshake by its code, anything else as a network error, named by
its class only so a ``?token=`` in the URL never reaches a log line); and a polite
but bounded close, also on cancellation. :class:`WsFollowerBase` is the read loop of an
open connection that both followers share: one message at a time into the commit
pipeline, no read while intake is paused, a close classified by its code.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    WebSocketException,
)

from argbridge.clock import Clock
from argbridge.config.arga import WebSocketConfig
from argbridge.events import CloudEvent
from argbridge.journal.records import EncodedEvent, encoded
from argbridge.reconnect import Decision, ReconnectPolicy
from argbridge.sources.follower import StreamFollower
from argbridge.sources.pipeline import CommitPipeline


@dataclass(frozen=True, slots=True)
class WsOptions:
    """Client limits of one WebSocket stream (see :class:`WebSocketConfig`)."""

    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    max_size: int = 1024 * 1024
    max_queue: int = 16
    compression: bool = False
    open_timeout: float = 10.0
    close_timeout: float = 5.0
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, cfg: WebSocketConfig, headers: dict[str, str] | None = None) -> WsOptions:
        return cls(
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            max_size=cfg.max_size,
            max_queue=cfg.max_queue,
            compression=cfg.compression,
            open_timeout=cfg.open_timeout,
            close_timeout=cfg.close_timeout,
            headers=dict(headers or {}),
        )


async def ws_attempt(
    url: str,
    opts: WsOptions,
    policy: ReconnectPolicy,
    clock: Clock,
    session: Callable[[ClientConnection], Awaitable[Decision]],
) -> Decision:
    """Connect to ``url``, run ``session`` on the connection, close it; the decision says
    how the attempt ended."""
    try:
        async with connect(
            url,
            proxy=None,
            additional_headers=opts.headers or None,
            compression="deflate" if opts.compression else None,
            open_timeout=opts.open_timeout,
            close_timeout=opts.close_timeout,
            ping_interval=opts.ping_interval or None,
            ping_timeout=opts.ping_timeout or None,
            max_size=opts.max_size,
            max_queue=opts.max_queue,
            user_agent_header="argbridge",
        ) as ws:
            try:
                return await session(ws)
            finally:
                # Also on cancellation (shutdown): close politely but boundedly, then drop.
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(opts.close_timeout):
                        await ws.close()
                    if not ws.transport.is_closing():
                        ws.transport.abort()
    except InvalidStatus as exc:
        response = exc.response
        return policy.on_ws_handshake_status(
            response.status_code, response.headers.get("Retry-After"), clock.time()
        )
    except ConnectionClosed as exc:  # closed during the opening handshake
        return policy.on_ws_close(exc.rcvd.code if exc.rcvd else None)
    except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
        return policy.on_network_error(type(exc).__name__)


class WsFollowerBase(StreamFollower):
    """A :class:`StreamFollower` whose stream is one WebSocket; subclasses map a message
    to an event (:meth:`_message`) and set :attr:`done` on the one that ends the run."""

    #: Set by :meth:`_message` once the stream's last event arrived.
    done: bool = False

    @abc.abstractmethod
    def _message(self, message: str | bytes) -> CloudEvent | None:
        """The event of one message (``None``: nothing to journal; rejections counted)."""

    def _encoded(self, message: str | bytes) -> EncodedEvent | None:
        """The event of one message, encoded for the journal (its decoded objects are
        dropped before the reader waits)."""
        event = self._message(message)
        return None if event is None else encoded(event)

    async def _read(self, ws: ClientConnection, pipe: CommitPipeline) -> Decision:
        try:
            while True:
                await self.ctx.wait_ready()  # paused: the queue fills, reading stops
                message = await ws.recv()
                item = self._encoded(message)
                if item is not None:
                    await pipe.put([item], item.id, size=len(message))
                    self.policy.progressed()
                del item, message  # nothing of it stays alive while the next one is awaited
                if self.done:
                    return self.policy.on_ws_close(1000, done=True)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            reason = exc.rcvd.reason if exc.rcvd else ""
            return self.policy.on_ws_close(code, reason=reason)
