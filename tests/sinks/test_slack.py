"""The Slack sink against a local Slack-compatible server (incoming webhook and
chat.postMessage) that misbehaves on purpose; every payload is validated with
``slack_sdk.models``; time is a :class:`ManualClock`."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from argbridge.errors import SinkError
from argbridge.journal import Journal
from argbridge.metrics import Metrics
from argbridge.router import Route
from argbridge.sinks.base import Delivery, SinkContext
from argbridge.sinks.slack import SlackSink
from tests.conftest import make_event, settings
from tests.support.manual_clock import ManualClock
from tests.support.receivers import Reply, SlackServer, serve


@dataclass
class Env:
    clock: ManualClock
    server: SlackServer
    journal: Journal
    sink: SlackSink
    metrics: Metrics
    tmp_path: Path

    async def deliveries(self, *events: Any, route: Route | None = None) -> list[Delivery]:
        for e in events:
            await self.journal.append(e)
        records = await self.journal.read("s", 1000)
        await self.journal.ack("s", records[-1].seq)
        return [Delivery(r, route or Route("default", ("s",), ())) for r in records]

    async def deliver(self, *events: Any, route: Route | None = None) -> None:
        batch = await self.deliveries(*events, route=route)
        done = False

        async def go() -> None:
            nonlocal done
            await self.sink.deliver(batch)
            done = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            while not done:
                await anyio.lowlevel.checkpoint()
                if self.clock.pending:
                    await self.clock.advance_to_next()


@contextlib.asynccontextmanager
async def slack_env(tmp_path: Path, *, bot: bool = False, **cfg: Any) -> AsyncIterator[Env]:
    clock = ManualClock()
    server = SlackServer(now=clock.monotonic)
    async with serve(server.router) as base:
        sink_cfg: dict[str, Any] = {"type": "slack", "rate": 1.0, "burst": 1, **cfg}
        if bot:
            sink_cfg.update(
                bot_token="xoxb-test-token", channel="#runs", api_base_url=base + "/api"
            )
        else:
            sink_cfg["webhook_url"] = base + "/hook"
        s = settings(tmp_path, sinks={"s": sink_cfg})
        async with Journal(tmp_path / "j.db", sinks=["s"], clock=clock) as journal:
            metrics = Metrics()
            sink = SlackSink(s.sinks["s"], SinkContext("s", journal, metrics, clock), s)  # type: ignore[arg-type]
            await sink.start()
            env = Env(clock, server, journal, sink, metrics, tmp_path)
            try:
                with anyio.fail_after(20):
                    yield env
            finally:
                await env.sink.aclose()
        assert not server.invalid, server.invalid


def counter(env: Env, name: str, **labels: str) -> float:
    value = env.metrics.registry.get_sample_value(name, {"component": "s", **labels})
    return value or 0.0


async def test_rate_is_respected_per_channel(tmp_path):
    async with slack_env(tmp_path) as env:
        await env.deliver(*(make_event(n) for n in range(4)))
        assert len(env.server.posts) == 4
        times = env.server.attempts
        assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [1.0] * 3
        assert counter(env, "argbridge_component_sent_events_total", kind="sink") == 4


async def test_429_retry_after_is_honoured(tmp_path):
    async with slack_env(tmp_path, burst=5) as env:
        env.server.script.append(Reply(429, {"retry-after": "7"}, b"rate_limited"))
        await env.deliver(make_event(1), make_event(2))
        assert len(env.server.posts) == 2
        assert env.server.attempts[1] - env.server.attempts[0] == 7.0  # the retry
        assert env.server.attempts[2] - env.server.attempts[1] == 1.0  # bucket refilled by 1


async def test_5xx_retries_the_batch_without_posting_twice(tmp_path):
    async with slack_env(tmp_path, burst=10) as env:
        env.server.script.extend([Reply(200, body=b"ok"), Reply(503)])
        batch = await env.deliveries(make_event(1), make_event(2), make_event(3))
        # The first 200 goes through the script (accepted but not recorded as a post).
        with pytest.raises(SinkError, match="HTTP 503"):
            await env.sink.deliver(batch)
        await env.sink.deliver(batch)  # the worker's retry
        assert len(env.server.attempts) == 4  # 1 ok + 1 failed + 2 retried: no repost of #1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, b"invalid_payload"),
        (403, b"action_prohibited"),
        (404, b"channel_not_found"),
        (410, b"channel_is_archived"),
    ],
)
async def test_permanent_errors_dead_letter_without_retry(tmp_path, status, body):
    async with slack_env(tmp_path, burst=10) as env:
        env.server.script.append(Reply(status, body=body))
        await env.deliver(make_event(1), make_event(2))
        (dl,) = await env.journal.dead_letters("s")
        assert dl.event.id == make_event(1).id and body.decode() in dl.reason
        assert len(env.server.attempts) == 2  # no retry of #1; #2 still posted
        assert len(env.server.posts) == 1
        assert counter(env, "argbridge_sink_dead_letters") == 1


async def test_threads_per_subject_survive_a_restart(tmp_path):
    async with slack_env(tmp_path, bot=True, burst=10) as env:
        first = make_event(1, subject="runs/r1", type_="arga.validation.step_started")
        second = make_event(2, subject="runs/r1", type_="arga.validation.step_result")
        other = make_event(3, subject="runs/r2")
        await env.deliver(first, second, other)
        p1, p2, p3 = env.server.posts
        assert p1["channel"] == "#runs" and "thread_ts" not in p1
        assert p2["thread_ts"] == p1["_ts"]
        assert "thread_ts" not in p3
        # A new sink (daemon restart) keeps replying in the stored thread.
        again = SlackSink(env.sink.config, env.sink.ctx, settings(tmp_path))
        await again.start()
        await env.sink.aclose()
        env.sink = again
        end = make_event(4, subject="runs/r1", type_="arga.validation.run.completed")
        await env.deliver(end)
        assert env.server.posts[3]["thread_ts"] == p1["_ts"]
        assert env.server.posts[3]["reply_broadcast"] is True


async def test_bot_mode_errors(tmp_path):
    async with slack_env(tmp_path, bot=True, burst=10) as env:
        env.server.script.append(Reply(200, body=b'{"ok": false, "error": "channel_not_found"}'))
        env.server.script.append(Reply(200, body=b'{"ok": false, "error": "internal_error"}'))
        batch = await env.deliveries(make_event(1), make_event(2))
        with pytest.raises(SinkError, match="internal_error"):
            await env.sink.deliver(batch)
        (dl,) = await env.journal.dead_letters("s")
        assert "channel_not_found" in dl.reason
        await env.sink.deliver(batch)
        assert len(env.server.posts) == 1


async def test_route_topic_picks_the_channel(tmp_path):
    async with slack_env(tmp_path, bot=True, burst=10) as env:
        await env.deliver(make_event(1), route=Route("ops", ("s",), (), "#ops"))
        assert env.server.posts[0]["channel"] == "#ops"


async def test_cooldown_coalesces_a_chatty_run(tmp_path):
    async with slack_env(tmp_path, burst=10, cooldown=60) as env:
        chatty = [make_event(n, subject="runs/r1") for n in range(5)]
        end = make_event(9, subject="runs/r1", type_="arga.validation.run.failed")
        await env.deliver(*chatty, end)
        assert len(env.server.posts) == 2  # the first update, then the ending
        context = next(
            b for b in env.server.posts[1]["attachments"][0]["blocks"] if b["type"] == "context"
        )
        assert any("+4 earlier" in e["text"] for e in context["elements"])
        assert (
            counter(
                env, "argbridge_component_discarded_events_total", kind="sink", reason="coalesced"
            )
            == 4
        )
        env.clock.advance(61)
        await env.deliver(make_event(10, subject="runs/r1"))
        assert len(env.server.posts) == 3


async def test_include_types_filters(tmp_path):
    async with slack_env(tmp_path, burst=10, include_types=["argus.incident."]) as env:
        await env.deliver(make_event(1), make_event(2, type_="argus.incident.created"))
        assert len(env.server.posts) == 1


async def test_requeued_dead_letters_are_posted_by_the_background_loop(tmp_path):
    async with slack_env(tmp_path, burst=10) as env:
        env.server.script.append(Reply(404, body=b"channel_not_found"))
        await env.deliver(make_event(1))
        assert await env.journal.requeue_dead_letters("s") == 1
        async with anyio.create_task_group() as tg:
            tg.start_soon(env.sink.background)
            await env.server.wait_for(1)
            await env.clock.wait_sleeping()  # the loop went back to sleep: all handled
            tg.cancel_scope.cancel()
        assert env.server.posts[0]["attachments"][0]["blocks"]
        assert await env.journal.count_retries("s") == 0
        assert await env.journal.count_dead_letters("s") == 0


async def test_an_unreachable_webhook_url_never_leaks_into_errors(tmp_path):
    from tests.conftest import free_port

    secret_url = f"http://127.0.0.1:{free_port()}/services/T000/B000/s3cr3t-hook-token"
    s = settings(tmp_path, sinks={"s": {"type": "slack", "webhook_url": secret_url}})
    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        sink = SlackSink(s.sinks["s"], SinkContext("s", journal, Metrics()), s)  # type: ignore[arg-type]
        await sink.start()
        await journal.append(make_event(1))
        batch = [Delivery(r, Route("d", ("s",), ())) for r in await journal.read("s", 10)]
        with pytest.raises(SinkError) as info:
            await sink.deliver(batch)
        await sink.aclose()
    assert "s3cr3t" not in str(info.value) and "s3cr3t" not in sink.health().detail
    assert "s3cr3t" not in repr(s.sinks["s"])


async def test_per_subject_memory_is_bounded(tmp_path, monkeypatch):
    """Issue 17: last post times, coalesced counts, thread ts and the posted-id memory
    are keyed by subjects and ids; each stays within its bound however many arrive."""
    from argbridge.sinks import slack

    monkeypatch.setattr(slack, "SUBJECT_MEMORY", 3)
    async with slack_env(tmp_path, bot=True, burst=100, cooldown=60, dedupe_memory=4) as env:
        events = [
            make_event(n, subject=f"runs/r{n // 2}", type_="arga.validation.step_result")
            for n in range(20)
        ]
        await env.deliver(*events)
        assert len(env.server.posts) == 10  # one per subject, the second one coalesced
        sink = env.sink
        assert len(sink._last_post) <= 3
        assert len(sink._threads) <= 3
        assert len(sink._coalesced) <= 3
        assert len(sink._posted) <= 4
