"""Local HTTP destinations for sink tests: a Standard Webhooks receiver and a
Slack-compatible server, both real HTTP on 127.0.0.1 (uvicorn on a free port), both
scriptable to misbehave (status sequences, Retry-After, abort headers, permanent errors).

Every request the webhook receiver gets is verified with the ``standardwebhooks``
package against each secret it knows; Slack payloads are validated with
``slack_sdk.models``.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson
from slack_sdk.models.attachments import BlockAttachment
from slack_sdk.models.blocks import Block
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from argbridge.http import embed
from argbridge.http.asgi import Request, Response, Router


@contextlib.asynccontextmanager
async def serve(router: Router, http: str = "h11") -> AsyncIterator[str]:
    """Serve ``router`` on a free loopback port; yields the base URL."""
    async with embed.serve(router, http=http) as url:
        yield url


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    payload: Any


class ClockedWebhook(Webhook):
    """``standardwebhooks.Webhook`` whose ±5 min timestamp tolerance uses the test clock."""

    def __init__(self, secret: str, now: Callable[[], float]) -> None:
        super().__init__(secret)
        self._now = now

    def _Webhook__verify_timestamp(self, timestamp_header: str) -> datetime:
        try:
            ts = float(timestamp_header)
        except ValueError:
            raise WebhookVerificationError("Invalid Signature Headers") from None
        if abs(ts - self._now()) > 300:
            raise WebhookVerificationError("Message timestamp out of tolerance")
        return datetime.fromtimestamp(ts, UTC)


class WebhookReceiver:
    """Verifies every request; replies from a script (then ``default``)."""

    def __init__(self, secrets: list[str], now: Callable[[], float] = time.time) -> None:
        self.hooks = [ClockedWebhook(s, now) for s in secrets]
        self.script: deque[Reply] = deque()
        self.default = Reply(204)
        self.received: list[Received] = []
        self.invalid: list[str] = []
        #: The client address of each verified request (one per connection used).
        self.peers: list[tuple[Any, ...]] = []
        self.arrived = anyio.Event()
        self.router = Router()
        self.router.add("POST", "/hook", self._hook)

    def verify(self, body: bytes, headers: dict[str, str]) -> Any:
        errors = []
        for hook in self.hooks:
            try:
                return hook.verify(body, headers)
            except WebhookVerificationError as exc:
                errors.append(str(exc))
        raise WebhookVerificationError("; ".join(errors))

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            payload = self.verify(body, request.headers)
        except Exception as exc:
            self.invalid.append(str(exc))
            return Response(401, b"bad signature")
        self.received.append(Received(dict(request.headers), body, payload))
        self.peers.append(tuple(request.scope.get("client") or ()))
        self.arrived.set()
        self.arrived = anyio.Event()
        reply = self.script.popleft() if self.script else self.default
        return Response(
            reply.status,
            reply.body,
            [(k.encode(), v.encode()) for k, v in reply.headers.items()],
        )

    async def wait_for(self, n: int) -> None:
        while len(self.received) < n:
            await self.arrived.wait()


def validate_slack_payload(payload: dict[str, Any]) -> None:
    """Raise unless every block and attachment builds and validates in ``slack_sdk``."""
    assert isinstance(payload.get("text"), str) and payload["text"], "fallback text missing"
    blocks = Block.parse_all(payload.get("blocks") or [])
    for block in blocks:
        block.validate_json()
    total = len(blocks)
    for att in payload.get("attachments") or []:
        inner = Block.parse_all(att.get("blocks") or [])
        for block in inner:
            block.validate_json()
        total += len(inner)
        BlockAttachment(blocks=inner, color=att.get("color"), fallback=att.get("fallback"))
    assert total <= 50, f"{total} blocks"


class SlackServer:
    """Incoming-webhook (``/hook``) and ``chat.postMessage`` (``/api/chat.postMessage``)."""

    def __init__(self, now: Callable[[], float] | None = None) -> None:
        self.script: deque[Reply] = deque()
        self.posts: list[dict[str, Any]] = []
        self.attempts: list[float] = []
        self.invalid: list[str] = []
        self.now = now
        self.arrived = anyio.Event()
        self._ts = 1000
        self.router = Router()
        self.router.add("POST", "/hook", self._hook)
        self.router.add("POST", "/api/chat.postMessage", self._post_message)
        self.on_request: Callable[[], Awaitable[None]] | None = None

    async def _receive(self, request: Request) -> tuple[dict[str, Any], Reply | None]:
        payload = orjson.loads(await request.body())
        if self.now is not None:
            self.attempts.append(self.now())
        try:
            validate_slack_payload(payload)
        except Exception as exc:
            self.invalid.append(repr(exc))
        if self.on_request is not None:
            await self.on_request()
        reply = self.script.popleft() if self.script else None
        return payload, reply

    def _accepted(self, payload: dict[str, Any]) -> None:
        self.posts.append(payload)
        self.arrived.set()
        self.arrived = anyio.Event()

    async def _hook(self, request: Request) -> Response:
        payload, reply = await self._receive(request)
        if reply is not None:
            return _reply(reply)
        self._accepted(payload)
        return Response(200, b"ok", content_type=b"text/plain")

    async def _post_message(self, request: Request) -> Response:
        if request.header("authorization") != "Bearer xoxb-test-token":
            return Response(200, b'{"ok": false, "error": "invalid_auth"}')
        payload, reply = await self._receive(request)
        if reply is not None:
            return _reply(reply)
        self._ts += 1
        ts = f"{self._ts}.000100"
        payload["_ts"] = ts
        self._accepted(payload)
        return Response(200, orjson.dumps({"ok": True, "channel": payload["channel"], "ts": ts}))

    async def wait_for(self, n: int) -> None:
        while len(self.posts) < n:
            await self.arrived.wait()


def _reply(reply: Reply) -> Response:
    return Response(
        reply.status,
        reply.body,
        [(k.encode(), v.encode()) for k, v in reply.headers.items()],
    )
