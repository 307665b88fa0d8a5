"""What an Arga follower needs of the API it talks to, and the run-document fetch.

Owns :class:`ArgaApi`, the narrow view of a running arga source handed to its
followers and to discovery (the HTTP client, the URLs, the key for the WebSocket
``?token=``, the WebSocket limits), and :func:`fetch_run`, the ``GET`` of a run document
used by every gap-fill. A follower holds an :class:`ArgaApi`, never the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from argbridge.config.arga import WebSocketConfig
from argbridge.sources.base import SourceContext


@dataclass(frozen=True, slots=True)
class ArgaApi:
    """The Arga API as a follower sees it."""

    client: httpx.AsyncClient = field(repr=False)
    #: Where requests go (the simulator's loopback URL when simulated).
    base_url: str
    #: The base URL events point at (the real API even when simulated).
    public_base_url: str
    api_key: str = field(repr=False)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    #: Extra headers of the WebSocket handshake (the HTTP client carries its own).
    ws_headers: dict[str, str] = field(default_factory=dict)


async def fetch_run(
    api: ArgaApi, ctx: SourceContext, log: Any, run_id: str, path: str
) -> dict[str, Any] | None:
    """GET a run document for gap-fill; ``None`` (logged or counted) when unusable.

    A failed gap-fill never ends the stream: the live stream still runs.
    """
    try:
        response = await api.client.get(path)
    except httpx.TransportError as exc:
        log.warning("arga.gap_fill_failed", error=type(exc).__name__)
        return None
    if response.status_code != 200:
        log.warning("arga.gap_fill_failed", status=response.status_code)
        return None
    try:
        run = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        ctx.reject("malformed_json", run_id=run_id, position=path)
        return None
    return run if isinstance(run, dict) else None
