"""Cluster mode's delivery consumers against Apache Kafka and the real Slack and webhook
receivers: events are written to the events topic with the Kafka sink's own codec; time
for retries is a :class:`ManualClock` (started at the real time, so Kafka's record
timestamps fall inside the dedupe window)."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from argbridge.config.settings import RouteConfig
from argbridge.events import CloudEvent, deterministic_id
from tests.conftest import make_event, settings
from tests.support.cluster_delivery import DeliveryHarness, Instance
from tests.support.manual_clock import ManualClock
from tests.support.receivers import Reply, SlackServer, WebhookReceiver, serve

pytestmark = pytest.mark.timeout(120)
SECRET = "whsec_" + base64.b64encode(b"c" * 32).decode()


@contextlib.asynccontextmanager
async def env(tmp_path: Path, bootstrap: str) -> AsyncIterator[Any]:
    clock = ManualClock(start=time.time())
    receiver = WebhookReceiver([SECRET], now=clock.time)
    slack = SlackServer()
    async with serve(receiver.router) as hook_base, serve(slack.router) as slack_base:
        s = settings(
            tmp_path,
            sinks={
                "hook": {
                    "type": "webhook",
                    "url": hook_base + "/hook",
                    "secrets": [SECRET],
                    "allow_private": True,
                    "retry_jitter": 0,
                    "retry_schedule": ["0s", "5s", "60s"],
                },
                "chat": {
                    "type": "slack",
                    "webhook_url": slack_base + "/hook",
                    "rate": 1000.0,
                    "burst": 1000,
                },
            },
        )
        async with DeliveryHarness(bootstrap, tmp_path, s, clock=clock) as h:
            h.receiver, h.slack, h.manual = receiver, slack, clock  # type: ignore[attr-defined]
            yield h


def events(n: int, subject: str = "run-a", start: int = 0) -> list[CloudEvent]:
    return [
        make_event(i, subject=subject, id=deterministic_id(subject, i))
        for i in range(start, start + n)
    ]


def ids(received: list[Any]) -> list[str]:
    return [r.payload["id"] for r in received]


async def all_committed(h: DeliveryHarness, inst: Instance, sink: str) -> None:
    """The group committed everything written (the broker's state, asked again after
    each commit of the consumer)."""
    ends = await h.ends()
    with anyio.fail_after(30):
        while True:
            committed = inst.consumer.committed
            if await h.committed(sink) == ends:
                return
            await committed.wait()


async def test_each_event_id_is_delivered_once_and_offsets_are_committed(tmp_path, kafka):
    async with env(tmp_path, kafka.bootstrap) as h:
        evs = [e for s in ("run-a", "run-b", "run-c", "run-d") for e in events(10, s)]
        repeats = evs[:5] + evs[-5:]  # a webhook retried onto another instance
        await h.produce(evs + repeats)
        async with h.instance("hook") as inst:
            await h.receiver.wait_for(40)
            await all_committed(h, inst, "hook")
            assert sorted(ids(h.receiver.received)) == sorted(e.id for e in evs)
            dup = inst.count(
                "argbridge_component_discarded_events_total",
                component="hook",
                kind="sink",
                reason="duplicate",
            )
            assert dup == 10
        assert not h.receiver.invalid


async def test_routes_apply(tmp_path, kafka):
    async with env(tmp_path, kafka.bootstrap) as h:
        h.settings = h.settings.model_copy(
            update={
                "routes": [
                    RouteConfig.model_validate(
                        {"sinks": ["hook"], "filters": [{"prefix": {"subject": "run-a"}}]}
                    )
                ]
            }
        )
        await h.produce(events(3, "run-a") + events(3, "run-b", start=3))
        async with h.instance("hook") as inst:
            await all_committed(h, inst, "hook")
            assert sorted(ids(h.receiver.received)) == sorted(e.id for e in events(3, "run-a"))


async def test_a_failing_delivery_does_not_block_its_partition(tmp_path, kafka):
    async with env(tmp_path, kafka.bootstrap) as h:
        h.receiver.script.append(Reply(503))
        evs = events(5)  # one subject: one partition
        await h.produce(evs)
        async with h.instance("hook") as inst:
            paused = inst.consumer.paused
            await h.receiver.wait_for(5)  # e0 failed, e1..e4 delivered behind it
            assert ids(h.receiver.received) == [e.id for e in evs]
            await paused.wait()  # the retry waits for its due time in its retry topic
            assert inst.count("argbridge_delivery_retries_scheduled_total", component="hook") == 1
            h.manual.advance(5.0)
            await h.receiver.wait_for(6)
            assert ids(h.receiver.received)[5] == evs[0].id
            await all_committed(h, inst, "hook")


async def test_a_scheduled_retry_survives_the_instance_that_scheduled_it(tmp_path, kafka):
    async with env(tmp_path, kafka.bootstrap) as h:
        h.receiver.script.append(Reply(503))
        evs = events(2)
        await h.produce(evs)
        async with h.instance("hook") as first:
            await h.receiver.wait_for(2)
            await first.consumer.paused.wait()
        assert len(h.receiver.received) == 2
        h.manual.advance(5.0)  # due while no instance runs
        async with h.instance("hook") as inst:
            await h.receiver.wait_for(3)
            assert ids(h.receiver.received)[2] == evs[0].id
            await all_committed(h, inst, "hook")
        assert sorted(set(ids(h.receiver.received))) == sorted(e.id for e in evs)


async def test_the_dedupe_window_is_rebuilt_on_assignment(tmp_path, kafka):
    async with env(tmp_path, kafka.bootstrap) as h:
        first = events(20, "run-a") + events(20, "run-b", start=20)
        await h.produce(first)
        async with h.instance("hook") as inst:
            await h.receiver.wait_for(40)
            await all_committed(h, inst, "hook")
        # A stream re-read after a handover: the same ids again, then new ones.
        later = events(5, "run-a", start=100)
        await h.produce(first + later)
        async with h.instance("hook") as second:
            await h.receiver.wait_for(45)
            await all_committed(h, second, "hook")
            rebuild = second.consumer.last_rebuild
            assert rebuild is not None and rebuild.ids == 40 and rebuild.partitions >= 1
        assert sorted(ids(h.receiver.received)) == sorted(e.id for e in first + later)


async def test_slack_retries_through_kafka_then_dead_letters(tmp_path, kafka):
    async with env(tmp_path, kafka.bootstrap) as h:
        h.slack.script.extend([Reply(500), Reply(500), Reply(500)])
        evs = events(1)
        await h.produce(evs)
        async with h.instance("chat") as inst:
            paused = inst.consumer.paused
            await paused.wait()  # failed once: waits in retry tier 1
            paused = inst.consumer.paused
            h.manual.advance(5.0)
            await paused.wait()  # failed again: tier 2
            h.manual.advance(60.0)
            with anyio.fail_after(30):
                while not await inst.journal.dead_letters("chat"):
                    await inst.consumer.committed.wait()
            (dead,) = await inst.journal.dead_letters("chat")
            assert dead.event.id == evs[0].id and dead.attempts == 3
            assert "gave up after 3" in dead.reason
            assert h.slack.posts == []
