"""The demo-runner WebSocket follower against the simulator on loopback."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from argbridge.normalize.arga import demorun_event
from tests.support.arga_fake import captured_logs, eventually, running_source, simulator

pytestmark = pytest.mark.timeout(30)


def expected_ids(run) -> set[str]:
    ids = set()
    for item in run.events:
        ev = demorun_event(run.run_id, {"type": "event", "event": item})
        assert ev is not None
        ids.add(ev.id)
    done = demorun_event(run.run_id, {"type": "done", "status": run.final_status})
    assert done is not None
    ids.add(done.id)
    return ids


async def test_live_events_then_done(tmp_path):
    async with simulator() as sim:
        run = sim.add_demo_run("d1", steps=4)
        run.publish(1)  # before we connect: only in events_json
        async with running_source(tmp_path, sim, demo_runs=["d1"]) as h:
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.streams_opened == 1)
                run.publish()
                assert await h.wait_run("demo", "d1") == "done"
            events = await h.events()
            ids = [e.id for e in events]
            assert len(ids) == len(set(ids)) and set(ids) == expected_ids(run)
            assert events[-1].type == "arga.demorun.done"
            assert events[-1].data["status"] == "completed"
            assert sim.ws_connections == 1


async def test_close_1008_after_accept_is_exactly_one_attempt(tmp_path):
    with captured_logs() as logs:
        await _close_1008(tmp_path)
    out = logs.getvalue()
    assert "arga.auth_failed" in out
    assert "test-token-123456" not in out


async def _close_1008(tmp_path: Path) -> None:
    async with simulator() as sim:
        sim.faults.ws_close_1008 = True
        sim.add_demo_run("d1", steps=2)
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("d1", "demo")
            with anyio.fail_after(10):
                assert await h.wait_run("demo", "d1") == "auth_failed"
            assert sim.ws_connections == 1
            assert h.clock.sleeps == []
            types = await h.types()
            assert types.count("argbridge.source.auth_failed") == 1
            assert h.metric("argbridge_source_auth_failures_total", component="arga") == 1


async def test_bad_token_closes_1008_and_never_leaks(tmp_path):
    with captured_logs() as logs:
        await _bad_token(tmp_path)
    assert "arga.auth_failed" in logs.getvalue()
    assert "secret-wrong-token-42" not in logs.getvalue()


async def _bad_token(tmp_path: Path) -> None:
    async with simulator() as sim:
        sim.add_demo_run("d1", steps=2)
        async with running_source(tmp_path, sim, api_key="secret-wrong-token-42") as h:
            await h.source.follow("d1", "demo")
            with anyio.fail_after(10):
                assert await h.wait_run("demo", "d1") == "auth_failed"
            assert sim.ws_connections == 1
            for e in await h.events():
                assert "secret-wrong-token-42" not in e.to_json().decode()


@pytest.mark.parametrize("status", [401, 403])
async def test_handshake_refused_with_auth_status(tmp_path, status):
    async with simulator() as sim:
        sim.faults.statuses = [status]
        sim.add_demo_run("d1", steps=2)
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("d1", "demo")
            with anyio.fail_after(10):
                assert await h.wait_run("demo", "d1") == "auth_failed"
            assert sim.ws_connections == 1


async def test_abnormal_close_mid_run_reconnects_and_gap_fills(tmp_path):
    async with simulator() as sim:
        sim.faults.drop_every = 2  # close 1011 after every 2 live events
        run = sim.add_demo_run("d1", steps=7, final="failed")
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("d1", "demo")
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.streams_opened == 1)
                run.publish(5)  # 2 arrive live, the rest only via events_json
                await sim.wait_until(lambda: sim.ws_connections >= 2)
                run.publish()
                assert await h.wait_run("demo", "d1") == "done"
            events = await h.events()
            ids = [e.id for e in events]
            assert len(ids) == len(set(ids)) and set(ids) == expected_ids(run)
            assert events[-1].data["status"] == "failed"
            assert events[-1].severity == "high"
            assert h.metric("argbridge_source_reconnects_total", component="arga") >= 1
            assert h.clock.sleeps and all(d <= 4 for d in h.clock.sleeps)


async def test_503_handshake_backs_off_with_retry_after(tmp_path):
    async with simulator() as sim:
        sim.faults.statuses = [503]
        sim.faults.retry_after = "9"
        run = sim.add_demo_run("d1", steps=2)
        run.publish()
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("d1", "demo")
            with anyio.fail_after(10):
                assert await h.wait_run("demo", "d1") == "done"
            assert h.clock.sleeps[0] >= 9
            assert {e.id for e in await h.events()} == expected_ids(run)


async def test_malformed_message_is_counted_not_fatal(tmp_path):
    async with simulator() as sim:
        sim.faults.bad_json_first = True
        run = sim.add_demo_run("d1", steps=2)
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("d1", "demo")

            async def rejected() -> bool:
                return (
                    h.metric(
                        "argbridge_component_discarded_events_total",
                        component="arga",
                        kind="source",
                        reason="malformed_json",
                    )
                    == 1
                )

            with anyio.fail_after(10):
                await eventually(rejected)
                run.publish()
                assert await h.wait_run("demo", "d1") == "done"
            assert {e.id for e in await h.events()} == expected_ids(run)
            assert (
                h.metric(
                    "argbridge_component_discarded_events_total",
                    component="arga",
                    kind="source",
                    reason="malformed_json",
                )
                == 1
            )


async def test_websocket_limits_are_configurable(tmp_path):
    async with simulator() as sim:
        run = sim.add_demo_run("d1", steps=2, pad=4096)
        async with running_source(
            tmp_path, sim, websocket={"max_size": 1024, "compression": True}
        ) as h:
            await h.source.follow("d1", "demo")
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.streams_opened == 1)
                run.publish(1)  # too big for max_size: close 1009, reconnect, gap-fill
                await sim.wait_until(lambda: sim.ws_connections >= 2)
                run.publish()
                assert await h.wait_run("demo", "d1") == "done"
            assert {e.id for e in await h.events()} == expected_ids(run)
