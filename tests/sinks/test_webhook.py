"""The webhook sink against a real local receiver that verifies every signature with the
``standardwebhooks`` package; time is a :class:`ManualClock` (no test sleeps)."""

from __future__ import annotations

import base64
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from argbridge.config.settings import Settings
from argbridge.delivery.breaker import BreakerState
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.router import Route, Router
from argbridge.sinks.base import Delivery, SinkContext, SinkWorker
from argbridge.sinks.file import FileSink
from argbridge.sinks.webhook import WebhookSink
from tests.conftest import make_event, settings
from tests.support.manual_clock import ManualClock
from tests.support.receivers import ClockedWebhook, Reply, WebhookReceiver, serve

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
ROUTE = Route("default", ("hook",), ())


@dataclass
class Env:
    clock: ManualClock
    receiver: WebhookReceiver
    journal: Journal
    sink: WebhookSink
    metrics: Metrics
    url: str
    settings: Settings

    async def deliver(self, *ns: int) -> None:
        for n in ns:
            await self.journal.append(make_event(n))
        records = await self.journal.read("hook", 1000)
        await self.sink.deliver([Delivery(r, ROUTE) for r in records])
        await self.journal.ack("hook", records[-1].seq)

    def gauge(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, {"component": "hook"})


@contextlib.asynccontextmanager
async def webhook_env(
    tmp_path: Path, *, secrets: list[str] | None = None, knows: list[str] | None = None, **cfg: Any
) -> AsyncIterator[Env]:
    clock = ManualClock(start=1_800_000_000.0)
    receiver = WebhookReceiver(knows or [OLD, NEW], now=clock.time)
    async with serve(receiver.router) as base:
        sink_cfg = {
            "type": "webhook",
            "url": base + "/hook",
            "secrets": secrets or [OLD],
            "allow_private": True,
            "retry_jitter": 0,
            **cfg,
        }
        s = settings(tmp_path, sinks={"hook": sink_cfg, "file": {"type": "file"}})
        async with Journal(tmp_path / "j.db", sinks=["hook", "file"], clock=clock) as journal:
            metrics = Metrics()
            sink = WebhookSink(s.sinks["hook"], SinkContext("hook", journal, metrics, clock), s)  # type: ignore[arg-type]
            await sink.start()
            try:
                with anyio.fail_after(20):
                    yield Env(clock, receiver, journal, sink, metrics, base + "/hook", s)
            finally:
                await sink.aclose()


async def test_signatures_verify_across_a_secret_rotation(tmp_path):
    async with webhook_env(tmp_path, secrets=[OLD, NEW], knows=[NEW]) as env:
        await env.deliver(1)
        assert len(env.receiver.received) == 1 and not env.receiver.invalid
        got = env.receiver.received[0]
        assert got.headers["webhook-id"] == make_event(1).id
        assert got.headers["webhook-timestamp"] == str(int(env.clock.time()))
        assert got.headers["content-type"].startswith("application/cloudevents+json")
        assert got.payload["id"] == make_event(1).id and got.payload["specversion"] == "1.0"
        # A receiver still on the old secret verifies the same request too.
        old_only = ClockedWebhook(OLD, env.clock.time)
        assert old_only.verify(got.body, got.headers)["id"] == make_event(1).id
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        assert (
            env.metrics.registry.get_sample_value(
                "argbridge_component_sent_events_total", {"component": "hook", "kind": "sink"}
            )
            == 1
        )


async def test_wrong_secret_is_refused_by_the_receiver(tmp_path):
    async with webhook_env(tmp_path, secrets=[OLD], knows=[NEW], retry_schedule=[0]) as env:
        await env.deliver(1)
        assert env.receiver.invalid and not env.receiver.received
        (dl,) = await env.journal.dead_letters("hook")
        assert "HTTP 401" in dl.reason


async def test_retry_schedule_is_followed_and_retry_after_honoured(tmp_path):
    async with webhook_env(tmp_path, retry_schedule=[0, 5, 300, 1800, 7200]) as env:
        env.receiver.script.extend(
            [Reply(500), Reply(503, {"retry-after": "400"}), Reply(502), Reply(204)]
        )
        await env.deliver(1)
        assert len(env.receiver.received) == 1
        (item,) = await env.journal.due_retries("hook", env.clock.time() + 10)
        assert item.attempt == 1 and item.due_at == env.clock.time() + 5
        async with anyio.create_task_group() as tg:
            tg.start_soon(env.sink.background)
            await env.clock.wait_sleeping()
            await env.clock.run_until(lambda: len(env.receiver.received) == 4)
            await env.clock.wait_sleeping()  # the loop handled the answer and sleeps again
            tg.cancel_scope.cancel()
        stamps = [int(r.headers["webhook-timestamp"]) for r in env.receiver.received]
        assert [b - a for a, b in itertools.pairwise(stamps)] == [5, 400, 1800]
        assert await env.journal.count_retries("hook") == 0
        assert await env.journal.count_dead_letters("hook") == 0
        assert not env.receiver.invalid


async def test_exhausted_schedule_dead_letters(tmp_path):
    async with webhook_env(tmp_path, retry_schedule=[0, 5]) as env:
        env.receiver.default = Reply(500)
        await env.deliver(1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(env.sink.background)
            await env.clock.wait_sleeping()
            await env.clock.run_until(lambda: len(env.receiver.received) == 2)
            await env.clock.wait_sleeping()  # the loop handled the answer and sleeps again
            tg.cancel_scope.cancel()
        (dl,) = await env.journal.dead_letters("hook")
        assert dl.attempts == 2 and "gave up after 2 attempt(s): HTTP 500" in dl.reason
        assert env.gauge("argbridge_sink_dead_letters") == 1


async def test_410_disables_the_endpoint_durably(tmp_path):
    async with webhook_env(tmp_path) as env:
        env.receiver.script.append(Reply(410))
        await env.deliver(1)
        await env.deliver(2)
        assert len(env.receiver.received) == 1  # the second was not even sent
        reasons = [d.reason for d in await env.journal.dead_letters("hook")]
        assert reasons[0] == "HTTP 410 Gone: endpoint disabled"
        assert reasons[1].startswith("endpoint disabled")
        assert "disabled" in env.sink.health().detail
        # A restart remembers it.
        again = WebhookSink(env.settings.sinks["hook"], env.sink.ctx, env.settings)  # type: ignore[arg-type]
        await again.start()
        assert again.disabled is not None
        await again.aclose()
        await env.sink.enable()
        await env.deliver(3)
        assert len(env.receiver.received) == 2


async def test_abort_message_header_stops_retries(tmp_path):
    async with webhook_env(tmp_path) as env:
        env.receiver.script.append(Reply(500, {"webhook-delivery": "abort-message"}))
        await env.deliver(1)
        assert await env.journal.count_retries("hook") == 0
        (dl,) = await env.journal.dead_letters("hook")
        assert dl.attempts == 1 and "abort" in dl.reason


async def test_breaker_opens_then_recovers_through_a_half_open_probe(tmp_path):
    async with webhook_env(
        tmp_path, breaker_threshold=2, breaker_cooldown=60, retry_schedule=[0, 5, 5, 5, 5, 5]
    ) as env:
        env.receiver.default = Reply(500)
        await env.deliver(1, 2)  # two endpoint failures: open
        assert env.gauge("argbridge_sink_circuit_breaker_state") == BreakerState.OPEN
        await env.deliver(3, 4, 5)  # refused locally while open: no request
        assert len(env.receiver.received) == 2
        due = sorted(i.attempt for i in await env.journal.due_retries("hook", 2e9))
        assert due == [0, 0, 0, 1, 1]  # postponed events did not use up an attempt
        env.receiver.default = Reply(204)
        async with anyio.create_task_group() as tg:
            tg.start_soon(env.sink.background)
            await env.clock.wait_sleeping()
            assert env.clock.pending == [5.0]
            env.clock.advance(5)  # events 1 and 2 are due, but the breaker is still open
            await env.clock.wait_sleeping()
            assert len(env.receiver.received) == 2
            # Half-open after the 60 s cooldown: one probe goes out, succeeds, closes.
            await env.clock.run_until(lambda: len(env.receiver.received) == 7)
            await env.clock.wait_sleeping()  # the loop handled the answer and sleeps again
            tg.cancel_scope.cancel()
        assert await env.journal.count_retries("hook") == 0
        stamps = [int(r.headers["webhook-timestamp"]) for r in env.receiver.received]
        assert stamps[2] - stamps[1] == 60  # the probe, exactly at the end of the cooldown
        ids = [r.payload["id"] for r in env.receiver.received[2:]]
        assert sorted(ids) == sorted(make_event(n).id for n in (1, 2, 3, 4, 5))
        assert env.gauge("argbridge_sink_circuit_breaker_state") == BreakerState.CLOSED


async def test_ssrf_guard_refuses_loopback_unless_allowed(tmp_path):
    async with webhook_env(tmp_path, allow_private=False) as env:
        await env.deliver(1)
        assert not env.receiver.received
        (dl,) = await env.journal.dead_letters("hook")
        assert "loopback address 127.0.0.1" in dl.reason


async def test_a_dead_endpoint_never_blocks_another_sink(tmp_path):
    async with webhook_env(tmp_path) as env:
        env.receiver.default = Reply(503)
        s = env.settings
        router = Router(s.routes, list(s.sinks))
        file_ctx = SinkContext("file", env.journal, env.metrics, env.clock)
        file_sink = FileSink(s.sinks["file"], file_ctx, s)  # type: ignore[arg-type]
        workers = [
            SinkWorker(env.sink, env.sink.ctx, router, batch_size=20),
            SinkWorker(file_sink, file_ctx, router, batch_size=20),
        ]
        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(w.run)
            for n in range(50):
                await env.journal.append(make_event(n))
            while env.journal.cursor("file") < 50 or env.journal.cursor("hook") < 50:
                await anyio.lowlevel.checkpoint()  # a yield, not a timed sleep
            for w in workers:
                w.stop()
            tg.cancel_scope.cancel()
        await file_sink.aclose()
        assert await env.journal.count_retries("hook") == 50
        lines = (s.state_dir / "events.jsonl").read_bytes().splitlines()
        assert len(lines) == 50


async def test_concurrent_posts_reuse_at_most_concurrency_connections(tmp_path):
    # One single-connection client per concurrency slot: all events arrive, verified,
    # over at most ``concurrency`` kept-alive connections.
    async with webhook_env(tmp_path, concurrency=3) as env:
        await env.deliver(*range(30))
        assert len(env.receiver.received) == 30 and not env.receiver.invalid
        assert 1 <= len(set(env.receiver.peers)) <= 3
        assert await env.journal.count_retries("hook") == 0
        await env.deliver(30, 31, 32)  # the connections stay usable
        assert len(set(env.receiver.peers)) <= 3
