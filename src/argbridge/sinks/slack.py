"""The ``slack`` sink: Block Kit messages via an incoming webhook or ``chat.postMessage``.

Per event (in journal order): optional type filter (``include_types``), per-subject
cooldown (within ``cooldown`` of the subject's last message, routine updates are
coalesced — counted as discarded ``coalesced`` and summarised in the next message;
run/incident beginnings and endings and high/critical severity always post), the
message from :mod:`argbridge.delivery.slack_blocks` (validated against Slack's limits),
then the per-channel token bucket (``rate``/s, ``burst``) before the POST.

Responses: 2xx ``ok`` → posted; 429 → the channel's bucket pauses for ``Retry-After``
and the same message is tried again; 5xx, timeouts and Slack's transient errors →
:class:`SinkError` (the worker retries the batch; ids already posted are remembered, so
nothing is posted twice); permanent errors (400 ``invalid_payload``, 403, 404
``channel_not_found``, 410 ``channel_is_archived``, ``not_in_channel``, ``invalid_auth``…)
→ that event is dead-lettered, the rest of the batch continues.

Threads (bot-token mode): the first message of a subject (run or incident) becomes the
parent; its ``ts`` is stored durably (``journal.set_state``) and later events of the
subject reply with ``thread_ts`` (endings are broadcast to the channel too). A route's
``topic`` selects the channel for that route.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import httpx
import orjson

from argbridge import __version__
from argbridge.config.settings import Settings
from argbridge.config.sinks import SlackSinkConfig
from argbridge.delivery.ratelimit import Buckets
from argbridge.delivery.slack_blocks import SlackPayloadError, build_message, is_terminal
from argbridge.delivery.webhook_out import parse_retry_after
from argbridge.errors import SinkError
from argbridge.sinks.base import Delivery, Health, SinkContext
from argbridge.sinks.requeue import RequeueRunner, refresh_dead_letter_gauge

#: Incoming-webhook HTTP statuses that will never succeed on retry.
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 410, 413})
#: chat.postMessage errors worth retrying; any other error is permanent.
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
URGENT_SEVERITIES = frozenset({"critical", "high"})
WEBHOOK_CHANNEL = "(webhook)"
#: Subjects (runs, incidents) whose last post time and thread ts are kept in memory.
SUBJECT_MEMORY = 10_000


def _bounded_put(cache: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        _, _ = cache.popitem(last=False)


class PostRefused(Exception):
    """Slack refused this message for good (dead-letter it)."""


class SlackSink:
    """Posts one Slack message per event, rate-limited and threaded per subject."""

    reports_sent: Literal[True] = True

    def __init__(self, config: SlackSinkConfig, ctx: SinkContext, settings: Settings) -> None:
        self.name = ctx.name
        self.config = config
        self.ctx = ctx
        self.buckets = Buckets(config.rate, config.burst)
        self.bot_mode = config.bot_token is not None
        self._client: httpx.AsyncClient | None = None
        self._posted: OrderedDict[tuple[str, str], None] = OrderedDict()
        # Per-subject memory, bounded (least recently used first out); thread ts also
        # live durably in the journal, so forgetting one here costs a read, not a thread.
        self._last_post: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._coalesced: dict[tuple[str, str], int] = {}
        self._threads: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._state = "not started"
        self._ok = True
        self.requeue = RequeueRunner(ctx, settings, self._redeliver)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is None:
            headers = {"user-agent": f"argbridge/{__version__}"}
            if self.config.bot_token is not None:
                headers["authorization"] = f"Bearer {self.config.bot_token.get_secret_value()}"
            self._client = httpx.AsyncClient(
                timeout=self.config.timeout, headers=headers, follow_redirects=False
            )
        self._state = "ok"
        await refresh_dead_letter_gauge(self.ctx)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def health(self) -> Health:
        return Health(self._client is not None, self._state)

    async def background(self) -> None:
        await self.requeue.run()

    def wake(self) -> None:
        self.requeue.waker.wake()

    # -- delivery ------------------------------------------------------------------------

    async def _redeliver(self, batch: Sequence[Delivery]) -> None:
        """Requeued dead letters: they were refused, not posted, so forget the refusal."""
        for d in batch:
            self._posted.pop((d.event.id, self._channel(d)), None)
        await self.deliver(batch)

    async def deliver(self, batch: Sequence[Delivery]) -> None:
        for d in batch:
            await self._deliver_one(d)

    def _channel(self, d: Delivery) -> str:
        if not self.bot_mode:
            return WEBHOOK_CHANNEL
        channel = d.route.topic or self.config.channel
        assert channel is not None  # the config requires a channel in bot mode
        return channel

    async def _deliver_one(self, d: Delivery) -> None:
        ctx, event = self.ctx, d.event
        if self.config.include_types and not event.type.startswith(
            tuple(self.config.include_types)
        ):
            ctx.metrics.discarded.labels(self.name, "sink", "type_filtered").inc()
            return
        channel = self._channel(d)
        key = (event.id, channel)
        if key in self._posted:
            return  # already posted (a retried batch, or two routes to one channel)
        subject = event.subject or event.partitionkey
        skey = (channel, subject or "")
        now = ctx.clock.monotonic()
        if (
            self.config.cooldown > 0
            and subject
            and not is_terminal(event)
            and (event.severity or "") not in URGENT_SEVERITIES
        ):
            last = self._last_post.get(skey)
            if last is not None and now - last < self.config.cooldown:
                self._coalesced[skey] = self._coalesced.get(skey, 0) + 1
                if len(self._coalesced) > SUBJECT_MEMORY:
                    del self._coalesced[next(iter(self._coalesced))]
                self._remember(key)
                ctx.metrics.discarded.labels(self.name, "sink", "coalesced").inc()
                return
        try:
            message = build_message(
                event,
                dashboard_url=self.config.dashboard_url,
                coalesced=self._coalesced.get(skey, 0),
            )
            thread_ts = await self._thread(skey) if subject else None
            payload = message.payload(channel if self.bot_mode else None, thread_ts)
            if thread_ts and is_terminal(event):
                payload["reply_broadcast"] = True
            ts = await self._post(channel, payload)
        except (PostRefused, SlackPayloadError) as exc:
            await ctx.journal.dead_letter(self.name, d.record, str(exc), 1)
            self._remember(key)  # a retried batch must not post what was dead-lettered
            ctx.metrics.errors.labels(self.name, "sink", "refused").inc()
            ctx.log.warning("slack.dead_letter", event_id=event.id, reason=str(exc))
            await refresh_dead_letter_gauge(ctx)
            return
        self._remember(key)
        self._coalesced.pop(skey, None)
        _bounded_put(self._last_post, skey, ctx.clock.monotonic(), SUBJECT_MEMORY)
        if ts and subject and self.bot_mode and self.config.threads and skey not in self._threads:
            _bounded_put(self._threads, skey, ts, SUBJECT_MEMORY)
            await ctx.journal.set_state(self._thread_key(skey), ts)
        ctx.count_sent([d.record])

    def _remember(self, key: tuple[str, str]) -> None:
        self._posted[key] = None
        while len(self._posted) > self.config.dedupe_memory:
            self._posted.popitem(last=False)

    def _thread_key(self, skey: tuple[str, str]) -> str:
        return f"slack:{self.name}:thread:{skey[0]}:{skey[1]}"

    async def _thread(self, skey: tuple[str, str]) -> str | None:
        if not (self.bot_mode and self.config.threads):
            return None
        ts = self._threads.get(skey)
        if ts is None:
            ts = await self.ctx.journal.get_state(self._thread_key(skey))
            if ts is not None:
                _bounded_put(self._threads, skey, ts, SUBJECT_MEMORY)
        return ts

    async def _post(self, channel: str, payload: dict[str, Any]) -> str | None:
        """POST once the channel's bucket allows; returns the message ``ts`` (bot mode)."""
        assert self._client is not None, "start() first"
        clock = self.ctx.clock
        bucket = self.buckets.get(channel)
        body = orjson.dumps(payload)
        if self.bot_mode:
            url = f"{self.config.api_base_url.rstrip('/')}/chat.postMessage"
        else:
            assert self.config.webhook_url is not None
            url = self.config.webhook_url.get_secret_value()
        while True:
            wait = bucket.take(clock.monotonic())
            if wait > 0:
                await clock.sleep(wait)
                continue
            try:
                response = await self._client.post(
                    url,
                    content=body,
                    headers={"content-type": "application/json; charset=utf-8"},
                )
            except httpx.HTTPError as exc:
                # The message may quote the webhook URL, which is a secret: type only.
                self._state = f"unreachable: {type(exc).__name__}"
                raise SinkError(f"slack: {type(exc).__name__}") from None
            status = response.status_code
            if status == 429:
                after = parse_retry_after(response.headers.get("retry-after"), clock.time())
                bucket.block(clock.monotonic(), after if after is not None else 1.0)
                self.ctx.metrics.errors.labels(self.name, "sink", "rate_limited").inc()
                self.ctx.log.info("slack.rate_limited", channel=channel, retry_after=after)
                continue
            return self._result(status, response)

    def _result(self, status: int, response: httpx.Response) -> str | None:
        text = response.text[:200]
        if status >= 500:
            self._state = f"slack answered HTTP {status}"
            raise SinkError(f"slack: HTTP {status}: {text}")
        if not self.bot_mode:
            if 200 <= status < 300:
                self._state = "ok"
                return None
            if status in PERMANENT_STATUSES or 400 <= status < 500:
                raise PostRefused(f"slack: HTTP {status}: {text}")
            raise SinkError(f"slack: HTTP {status}: {text}")
        if status in PERMANENT_STATUSES:
            raise PostRefused(f"slack: HTTP {status}: {text}")
        try:
            result = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise SinkError(f"slack: HTTP {status}, not JSON: {text}") from None
        if not isinstance(result, dict):
            raise SinkError(f"slack: HTTP {status}, unexpected answer: {text}")
        if result.get("ok") is True:
            self._state = "ok"
            ts = result.get("ts")
            return ts if isinstance(ts, str) else None
        error = str(result.get("error", "unknown_error"))
        if error in TRANSIENT_ERRORS:
            raise SinkError(f"slack: {error}")
        raise PostRefused(f"slack: {error}")
