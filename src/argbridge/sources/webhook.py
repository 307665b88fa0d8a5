"""Inbound webhook sources: ``POST /webhooks/<source name>`` → verified → journaled event.

One :class:`WebhookSource` per configured ``argus-webhook`` or generic ``webhook`` source.
The runtime asks it for its :meth:`~WebhookSource.routes` when it builds the source and
adds them to the daemon's HTTP router; :meth:`~WebhookSource.run` only runs the optional
enrichment workers (or waits).

A request goes through, in order (the first failing check answers, with an
``application/problem+json`` body):

===========================================  ======
content type is not JSON                     415
the journal signals backpressure             503 + ``Retry-After``
body over ``max_body`` (while streaming)     413 (connection closed, rest never read)
body slower than ``body_timeout``            408
signature/timestamp do not verify            401 (no detail: nothing that helps forging)
body is not JSON                             400
valid JSON of the wrong shape                422
no room under the backlog's hard bound       503 + ``Retry-After``
journal commit failed / journal closing      503 + ``Retry-After``
cluster: too large for the events topic      413 (before journaling)
cluster: the events topic did not ack it     503 + ``Retry-After`` (see below)
committed, or already known (a replay)       200
===========================================  ======

The 200 is sent only after :meth:`SourceContext.emit` returned, i.e. after the journal
commit. In cluster mode with ``cluster.webhook_ack = "kafka"`` it also waits for the Kafka
events topic's ack of the event (:attr:`SourceContext.acks`,
:mod:`argbridge.cluster.webhook_ack`), also for a replay whose event is not acked yet;
not acked within ``cluster.webhook_ack_timeout`` (or Kafka unreachable), the answer is
503 + ``Retry-After`` (the event stays journaled; the retry is a duplicate), unless
``cluster.webhook_fallback_to_journal``. The 200 body then says how safe the event is
(``"ack": "kafka"`` or ``"journal"``).

Replay protection: the event id is ``deterministic_id(source name, delivery id)`` where
the delivery id is the signed ``webhook-id`` (standard-webhooks), else the configured
``id_header`` (unsigned: see its config doc) or the SHA-256 of the signed body. The
journal drops a known id (kept ``journal.dedupe_window``, which must be at least twice the
tolerance: a timestamp may be up to ``tolerance`` in the future and is still accepted
``tolerance`` after it). A replay gets 200 and no new event.

Enrichment (``argus-webhook`` with ``enrich_similar``): after a ``created`` incident was
accepted and answered, a worker calls ``GET {argus_base_url}/ai/similar-incidents/{id}``
(bounded by ``enrich_timeout``) and journals a follow-up ``argus.incident.similar_found``
event. It never runs before the 2xx, so Argus being slow or down cannot delay or block
acceptance; when the bounded queue is full, enrichment is skipped and counted.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import httpx
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from argbridge.config.settings import Settings
from argbridge.config.webhooks import ArgusWebhookSourceConfig, GenericWebhookSourceConfig
from argbridge.errors import ConfigError, JournalError, NotAcknowledged
from argbridge.events import CloudEvent
from argbridge.http.asgi import (
    BodyTimeout,
    BodyTooLarge,
    ClientDisconnected,
    Handler,
    Request,
    Response,
    problem,
)
from argbridge.journal import AppendStatus
from argbridge.journal.backpressure import IntakePaused
from argbridge.normalize.argus import incident_event, similar_event
from argbridge.normalize.webhook import generic_event
from argbridge.signing import VerificationFailed, Verifier, body_hash
from argbridge.sinks.base import Health
from argbridge.sources.base import SourceContext
from argbridge.tracecontext import with_trace

WebhookConfig = ArgusWebhookSourceConfig | GenericWebhookSourceConfig
ENRICH_WORKERS = 4

_UNSUPPORTED = problem(
    415, "Unsupported Media Type", "the body must be JSON (Content-Type: application/json)"
)
_UNAUTHORIZED = problem(401, "Unauthorized", "the webhook signature did not verify")
_BAD_JSON = problem(400, "Bad Request", "the body is not valid JSON")


def is_json_type(content_type: str) -> bool:
    """``application/json``, ``application/*+json`` (parameters such as charset allowed)."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class WebhookSource:
    """One inbound webhook endpoint."""

    def __init__(self, name: str, config: WebhookConfig, settings: Settings) -> None:
        self.name = name
        self.config = config
        self.path = f"/webhooks/{name}"
        key = f"sources.{name}"
        # http.enabled and journal.dedupe_window >= 2 x tolerance are checked with the
        # rest of the settings (config.settings._cross_check_sources).
        try:
            self.verifier = Verifier(
                config.scheme,
                [s.get_secret_value() for s in config.secrets],
                tolerance=config.tolerance,
                signature_header=config.signature_header,
                id_header=config.id_header,
            )
        except ValueError as exc:
            raise ConfigError([(f"{key}.secrets", str(exc))]) from None
        self._unavailable = problem(
            503,
            "Service Unavailable",
            "argbridge is applying backpressure; retry later",
            headers={"retry-after": str(config.retry_after)},
        )
        self._ctx: SourceContext | None = None
        self._enrich = isinstance(config, ArgusWebhookSourceConfig) and config.enrich_similar
        self._enrich_send: MemoryObjectSendStream[CloudEvent] | None = None
        self.accepted = 0
        self.duplicates = 0

    def __repr__(self) -> str:
        return f"WebhookSource(name={self.name!r}, scheme={self.config.scheme!r})"

    # -- runtime hooks ----------------------------------------------------------------

    def routes(self, ctx: SourceContext) -> list[tuple[str, str, Handler]]:
        """The HTTP routes of this source (added by the runtime to the daemon's router)."""
        self._ctx = ctx
        return [("POST", self.path, self.handle)]

    async def run(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        if not self._enrich:
            await anyio.sleep_forever()
        assert isinstance(self.config, ArgusWebhookSourceConfig)
        headers = {"accept": "application/json"}
        if self.config.argus_token is not None:
            headers["authorization"] = f"Bearer {self.config.argus_token.get_secret_value()}"
        send, receive = anyio.create_memory_object_stream[CloudEvent](self.config.enrich_queue)
        async with (
            send,
            receive,
            httpx.AsyncClient(
                base_url=self.config.argus_base_url.rstrip("/"),
                headers=headers,
                timeout=self.config.enrich_timeout,
            ) as client,
            anyio.create_task_group() as tg,
        ):
            for _ in range(ENRICH_WORKERS):
                tg.start_soon(self._enrich_worker, ctx, client, receive)
            self._enrich_send = send
            try:
                await anyio.sleep_forever()
            finally:
                self._enrich_send = None

    def health(self) -> Health:
        if self._ctx is None:
            return Health(False, "not started")
        if self._ctx.paused:
            return Health(True, f"{self.path}: answering 503 (backpressure)")
        return Health(True, f"listening on {self.path}")

    # -- the request path -------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        ctx = self._ctx
        cfg = self.config
        if ctx is None:
            return self._unavailable
        ctype = request.headers.get("content-type")
        if ctype is None or not is_json_type(ctype):
            ctx.reject("unsupported_media_type")
            return _UNSUPPORTED
        if ctx.paused:
            ctx.metrics.discarded.labels(self.name, "source", "backpressure").inc()
            return self._unavailable
        try:
            body = await request.body(cfg.max_body, cfg.body_timeout)
        except BodyTooLarge:
            ctx.reject("too_large", limit=cfg.max_body)
            raise  # the router answers 413 and closes the connection
        except BodyTimeout:
            ctx.reject("body_timeout", limit=cfg.body_timeout)
            raise  # 408, connection closed
        except ClientDisconnected:
            ctx.reject("client_disconnected")
            raise
        try:
            verified = self.verifier.verify(request.headers, body, ctx.clock.time())
        except VerificationFailed as exc:
            ctx.reject("bad_signature", detail=exc.reason)
            return _UNAUTHORIZED
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            ctx.reject("bad_json")
            return _BAD_JSON
        delivery = verified.delivery_id or body_hash(body)
        try:
            event = self._normalize(ctx, payload, delivery)
            if "traceparent" in request.headers:
                event = with_trace(event, request.headers)  # W3C trace context, kept
            if ctx.acks is not None and (too_large := ctx.acks.admits(event)) is not None:
                # Cluster mode: what the events topic cannot take reaches no delivery.
                ctx.reject("too_large_for_cluster", detail=too_large)
                return problem(413, "Content Too Large", too_large)
            # Never wait for room under the backlog's hard bound: answer 503 instead.
            status = await ctx.emit(event, wait=False)
        except IntakePaused:
            ctx.metrics.discarded.labels(self.name, "source", "backpressure").inc()
            return self._unavailable
        except JournalError as exc:
            ctx.log.warning("webhook.journal_unavailable", error=exc)
            return self._unavailable
        except (ValueError, TypeError) as exc:
            # Shape errors, CloudEvents rule violations, unencodable values: client input.
            ctx.reject("wrong_shape", detail=str(exc)[:200])
            return problem(422, "Unprocessable Content", str(exc)[:200])
        if status is AppendStatus.DUPLICATE:
            self.duplicates += 1
            outcome = "duplicate"
        else:
            self.accepted += 1
            outcome = "accepted"
        try:
            if ctx.acks is None:
                return _accepted(event, outcome)
            return _accepted(event, outcome, await ctx.acks.confirm(event.id))
        except NotAcknowledged as exc:
            return problem(
                503,
                "Service Unavailable",
                str(exc),
                headers={"retry-after": str(cfg.retry_after)},
                id=event.id,
            )
        except JournalError as exc:
            ctx.log.warning("webhook.journal_unavailable", error=exc)
            return self._unavailable
        finally:
            if outcome == "accepted":
                # Journaled, whatever the answer: a retry will be a duplicate.
                self._enqueue_enrichment(ctx, event)

    def _enqueue_enrichment(self, ctx: SourceContext, event: CloudEvent) -> None:
        if self._enrich_send is not None and event.type.endswith("argus.incident.created"):
            try:
                self._enrich_send.send_nowait(event)
            except (anyio.WouldBlock, anyio.ClosedResourceError):
                ctx.metrics.discarded.labels(self.name, "source", "enrich_queue_full").inc()

    def _normalize(self, ctx: SourceContext, payload: Any, delivery: str) -> CloudEvent:
        cfg = self.config
        if isinstance(cfg, ArgusWebhookSourceConfig):
            return incident_event(
                self.name,
                payload,
                delivery_id=delivery,
                base_url=cfg.argus_base_url,
                prefix=ctx.type_prefix,
            )
        return generic_event(
            self.name,
            payload,
            delivery_id=delivery,
            ce_type=cfg.ce_type,
            ce_source=cfg.ce_source,
            subject_field=cfg.subject_field,
            now=ctx.clock.time(),
        )

    # -- enrichment (after acceptance) ------------------------------------------------

    async def _enrich_worker(
        self,
        ctx: SourceContext,
        client: httpx.AsyncClient,
        receive: MemoryObjectReceiveStream[CloudEvent],
    ) -> None:
        assert isinstance(self.config, ArgusWebhookSourceConfig)
        timeout = self.config.enrich_timeout
        async for event in receive:
            matches: Any = None
            with anyio.move_on_after(timeout):
                try:
                    response = await client.get(f"/ai/similar-incidents/{event.subject}")
                    response.raise_for_status()
                    matches = response.json().get("matches")
                except (httpx.HTTPError, ValueError, AttributeError) as exc:
                    ctx.metrics.errors.labels(self.name, "source", "enrichment").inc()
                    ctx.log.warning(
                        "webhook.enrichment_failed", incident=event.subject, error=str(exc)
                    )
                    continue
            if not isinstance(matches, list):
                ctx.metrics.errors.labels(self.name, "source", "enrichment").inc()
                ctx.log.warning("webhook.enrichment_failed", incident=event.subject)
                continue
            try:
                await ctx.emit(similar_event(self.name, event, matches, prefix=ctx.type_prefix))
            except (JournalError, ValueError, TypeError) as exc:
                ctx.log.warning("webhook.enrichment_emit_failed", error=exc)


def _accepted(event: CloudEvent, status: str, ack: str | None = None) -> Response:
    body = {"status": status, "id": event.id}
    if ack is not None:
        body["ack"] = ack
    return Response(200, orjson.dumps(body))
