"""The stream-follower skeleton on its own, with a scripted transport."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from argbridge.journal import Journal
from argbridge.journal.records import encoded
from argbridge.metrics import Metrics
from argbridge.reconnect import Action, Decision, ReconnectPolicy
from argbridge.sources.base import SourceContext
from argbridge.sources.follower import StreamFollower, StreamSlots
from argbridge.sources.pipeline import CommitPipeline
from tests.conftest import make_event
from tests.support.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(30)


class Scripted(StreamFollower):
    """Each attempt pops the next decision; ``"events"`` reads two events first."""

    def __init__(self, ctx: SourceContext, script: list[Any], **kw: Any) -> None:
        super().__init__(ctx, "run-1", stream="test", log_ns="test", **kw)
        self.script = script
        self.gap_fills = 0
        self.finished_calls = 0
        self.open_during_connect: list[int] = []

    async def connect(self) -> Decision:
        self.open_during_connect.append(self.slots.open)
        step = self.script.pop(0)
        if step == "events":

            async def read(pipe: CommitPipeline) -> Decision:
                n = len(self.script)
                await pipe.put([encoded(make_event(n)), encoded(make_event(100 + n))])
                self.policy.progressed()
                return self.policy.on_eof(terminal=False)

            return await self.session(read)
        assert isinstance(step, Decision)
        return step

    async def gap_fill(self) -> int:
        self.gap_fills += 1
        return 0

    async def finished(self) -> None:
        self.finished_calls += 1


async def test_connect_read_reconnect_and_done(tmp_path):
    clock = ManualClock()
    alerts: list[tuple[str, str, str]] = []

    async def alert(key: str, stream: str, detail: str, *, missing: bool = False) -> None:
        alerts.append((key, stream, detail))

    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        ctx = SourceContext("t", journal, Metrics(), clock)
        policy = ReconnectPolicy(initial=1, cap=4, jitter=False)
        slots = StreamSlots(2)
        follower = Scripted(
            ctx,
            ["events", "events", Decision(Action.DONE, "terminal")],
            policy=policy,
            slots=slots,
            alert=alert,
        )
        result: list[str] = []

        async def go() -> None:
            result.append(await follower.run())

        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            await clock.run_until(lambda: bool(result))
        assert result == ["done"]
        assert follower.events == 4 and journal.last_seq == 4
        assert follower.open_during_connect == [1, 1, 1]  # a slot only while connected
        assert slots.open == 0
        assert clock.sleeps == [1.0, 1.0]  # progress resets the backoff
        assert follower.gap_fills == 1  # after the reconnect, not on the first session
        assert follower.finished_calls == 1 and alerts == []


async def test_refused_and_missing_streams_alert_and_other_stops_are_counted(tmp_path):
    alerts: list[tuple[str, str, str, bool]] = []

    async def alert(key: str, stream: str, detail: str, *, missing: bool = False) -> None:
        alerts.append((key, stream, detail, missing))

    async with Journal(tmp_path / "j.db", sinks=["s"]) as journal:
        metrics = Metrics()
        ctx = SourceContext("t", journal, metrics, ManualClock())
        policy = ReconnectPolicy()
        auth = policy.on_response(401, None)
        assert auth is not None
        follower = Scripted(ctx, [auth], policy=policy, slots=StreamSlots(1), alert=alert)
        assert await follower.run() == "auth_failed"
        assert alerts == [("run-1", "test", "HTTP 401", False)]
        # A missing stream is an alert on that stream too (issue 11), flagged missing.
        gone = policy.on_response(404, None)
        assert gone is not None
        follower = Scripted(ctx, [gone], policy=policy, slots=StreamSlots(1), alert=alert)
        assert await follower.run() == "not_found"
        assert alerts[1:] == [("run-1", "test", "run not found", True)]
        odd = policy.on_response(204, None)
        assert odd is not None
        follower = Scripted(ctx, [odd], policy=policy, slots=StreamSlots(1), alert=alert)
        assert await follower.run() == "http_204"
        assert len(alerts) == 2
        errors = metrics.registry.get_sample_value(
            "argbridge_component_errors_total",
            {"component": "t", "kind": "source", "error_type": "http_204"},
        )
        assert errors == 1
