"""The demo's signed-webhook receiver: verifies each request with ``standardwebhooks``.

``POST /hook`` is what the daemon's ``webhook`` sink delivers to. Every request is checked
with the ``standardwebhooks`` package (an independent implementation, not argbridge's own
:mod:`argbridge.signing`) against the demo's secret: a valid one is counted (per event
type) and answered 204, an invalid one is counted and answered 401 — so the summary shows
that what left the daemon was signed correctly.
"""

from __future__ import annotations

from collections import Counter

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from argbridge.http.asgi import Request, Response, Router, problem

PATH = "/hook"


class SignedWebhookReceiver:
    """Counts valid and invalid Standard Webhooks deliveries."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._hook = Webhook(secret)
        self.valid = 0
        self.invalid = 0
        self.types: Counter[str] = Counter()
        self.router = Router()
        self.router.add("POST", PATH, self.handle)

    def __repr__(self) -> str:
        return f"SignedWebhookReceiver(valid={self.valid}, invalid={self.invalid})"

    async def handle(self, request: Request) -> Response:
        body = await request.body(4 * 1024 * 1024)
        try:
            self._hook.verify(body, dict(request.headers), json_parse=False)
        except (WebhookVerificationError, ValueError, UnicodeDecodeError):
            self.invalid += 1
            return problem(401, "Unauthorized", "the webhook signature did not verify")
        self.valid += 1
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("type"), str):
            self.types[payload["type"]] += 1
        return Response(204, b"", content_type=None)
