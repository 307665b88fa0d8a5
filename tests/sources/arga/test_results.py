"""The results SSE follower against the simulator on loopback, scripted to misbehave."""

from __future__ import annotations

import anyio
import pytest

from argbridge.normalize.arga import results_event
from tests.support.arga_fake import eventually, running_source, simulator

pytestmark = pytest.mark.timeout(30)


def expected_ids(run) -> set[str]:
    """The ids of a run's complete event set."""
    out = set()
    for n, payload in enumerate(run.events, start=1):
        out.add(results_event(run.run_id, payload, upstream_id=str(n)).id)
    return out


async def test_follows_a_run_to_its_terminal_event(tmp_path):
    async with simulator() as sim:
        run = sim.add_validation_run("r1", steps=3)
        run.publish(4)
        async with running_source(tmp_path, sim, runs=["r1"]) as h:
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.streams_opened == 1)
                run.publish()
                assert await h.wait_run("validation", "r1") == "done"
            events = await h.events()
            assert {e.id for e in events} == expected_ids(run)
            assert events[-1].type == "arga.validation.run.complete"
            assert events[0].data["upstream"] == run.events[0]
            assert await h.journal.get_state("arga:arga:sse:r1:last_id") == str(len(run.events))
            assert sim.requests["results"] == 1


def step_result_ids(run) -> set[str]:
    return {
        results_event(run.run_id, p).id
        for p in run.events
        if p["type"] == "step_result" or p is run.events[-1]
    }


async def _follow_live(h, sim, run, *, final=True):
    """Publish everything but the terminal event, then (optionally) the terminal one."""
    run.publish(len(run.events) - 1)
    if final:
        run.publish()


@pytest.mark.parametrize("half_written", [False, True])
async def test_drop_every_n_events_loses_nothing_and_duplicates_nothing(tmp_path, half_written):
    async with simulator() as sim:
        sim.faults.drop_every = 3
        sim.faults.half_written = half_written
        run = sim.add_validation_run("r1", steps=5)
        run.publish(len(run.events) - 1)
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                # 11 events before the terminal one: sessions of 3, 3, 3 and 2 (+ terminal).
                await sim.wait_until(lambda: sim.requests.get("results", 0) >= 4)
                run.publish()
                assert await h.wait_run("validation", "r1") == "done"
            events = await h.events()
            ids = [e.id for e in events]
            assert len(ids) == len(set(ids))
            assert set(ids) == expected_ids(run)
            # Each reconnect resumed where the last one stopped.
            assert sim.last_event_ids == [None, "3", "6", "9"]
            assert h.metric("argbridge_source_reconnects_total", component="arga") == 3
            truncated = h.metric(
                "argbridge_component_discarded_events_total",
                component="arga",
                kind="source",
                reason="truncated_frame",
            )
            assert truncated == (3 if half_written else 0)


async def test_server_ignoring_last_event_id_is_covered_by_dedupe(tmp_path):
    async with simulator() as sim:
        sim.faults.drop_every = 4
        sim.faults.ignore_last_event_id = True
        run = sim.add_validation_run("r1", steps=3)
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.streams_opened >= 1)
                run.publish(len(run.events) - 1)  # 7 events, replayed from 1 every time
                await sim.wait_until(lambda: sim.requests.get("results", 0) >= 3)
                sim.faults.drop_every = 0
                want = expected_ids(run) - {results_event("r1", run.events[-1]).id}
                while not want <= {e.id for e in await h.events()}:
                    await h.journal.wait_for_events(h.journal.last_seq)
                run.publish()
                assert await h.wait_run("validation", "r1") == "done"
            ids = [e.id for e in await h.events()]
            assert len(ids) == len(set(ids)) and set(ids) == expected_ids(run)
            dupes = h.metric(
                "argbridge_component_discarded_events_total",
                component="arga",
                kind="source",
                reason="duplicate",
            )
            assert dupes >= 4


async def test_run_finished_while_disconnected_is_gap_filled(tmp_path):
    async with simulator() as sim:
        sim.faults.drop_every = 2
        sim.faults.gate = anyio.Event()
        sim.faults.gate_after = 1
        run = sim.add_validation_run("r1", steps=4)
        run.publish(len(run.events) - 1)
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.requests.get("results", 0) >= 2)
                run.publish()  # the run ends while we are disconnected
                sim.faults.gate.set()
                assert await h.wait_run("validation", "r1") == "done"
            events = await h.events()
            ids = {e.id for e in events}
            assert step_result_ids(run) <= ids
            assert sum(1 for e in events if e.type == "arga.validation.step_result") == 4
            assert events[-1].type == "arga.validation.run.complete"
            assert sim.requests["run"] >= 1


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_stops_with_one_attempt_and_alerts(tmp_path, status):
    async with simulator() as sim:
        sim.faults.statuses = [status, status, status]
        sim.add_validation_run("r1", steps=1)
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                assert await h.wait_run("validation", "r1") == "auth_failed"
            assert sim.requests["results"] == 1
            types = await h.types()
            assert types == ["argbridge.source.auth_failed"]
            assert h.metric("argbridge_source_auth_failures_total", component="arga") == 1
            assert not h.source.health().ready
            assert h.clock.sleeps == []


async def test_bad_api_key_is_an_auth_failure(tmp_path):
    async with simulator() as sim:
        sim.add_validation_run("r1", steps=1)
        async with running_source(tmp_path, sim, api_key="wrong-key-999") as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                assert await h.wait_run("validation", "r1") == "auth_failed"


async def test_404_stops_as_run_not_found(tmp_path):
    async with simulator() as sim:
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("nope", "validation")
            with anyio.fail_after(10):
                assert await h.wait_run("validation", "nope") == "not_found"
            assert sim.requests["results"] == 1
            # A missing run is an alert on that run (issue 11), not a key failure.
            assert await h.types() == ["argbridge.source.run_not_found"]
            assert h.metric("argbridge_source_auth_failures_total", component="arga") == 0
            assert h.source.health().ready


@pytest.mark.parametrize(("status", "retry_after"), [(429, "7"), (503, "3"), (500, None)])
async def test_retryable_status_backs_off_honouring_retry_after(tmp_path, status, retry_after):
    async with simulator() as sim:
        sim.faults.statuses = [status, status]
        sim.faults.retry_after = retry_after
        run = sim.add_validation_run("r1", steps=1)
        run.publish()
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                assert await h.wait_run("validation", "r1") == "done"
            assert sim.requests["results"] == 3
            assert len(h.clock.sleeps) == 2
            if retry_after:
                assert all(d >= float(retry_after) for d in h.clock.sleeps)
            else:
                assert all(0 <= d <= 4 for d in h.clock.sleeps)


async def test_server_retry_field_sets_the_floor(tmp_path):
    async with simulator() as sim:
        sim.faults.retry_ms = 2500
        sim.faults.drop_every = 1
        run = sim.add_validation_run("r1", steps=1)
        run.publish(len(run.events) - 1)
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.requests.get("results", 0) >= 2)
                sim.faults.drop_every = 0
                run.publish()
                assert await h.wait_run("validation", "r1") == "done"
            assert h.clock.sleeps and all(d >= 2.5 for d in h.clock.sleeps)


async def test_wrong_content_type_is_not_retried(tmp_path):
    async with simulator() as sim:
        sim.faults.content_type = "text/html"
        sim.add_validation_run("r1", steps=1).publish()
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                assert await h.wait_run("validation", "r1") == "bad_content_type"
            assert sim.requests["results"] == 1
            assert await h.types() == []
            # Discovery or a second follow of a stopped run does not start a loop either.
            assert await h.source.follow("r1", "validation") is False


async def test_bom_heartbeats_and_malformed_json(tmp_path):
    async with simulator() as sim:
        sim.faults.bom = True
        sim.faults.heartbeats_first = 200  # a heartbeat-only period first
        sim.faults.bad_json_first = True
        run = sim.add_validation_run("r1", steps=2)
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.streams_opened == 1)
                run.publish()
                assert await h.wait_run("validation", "r1") == "done"
            ids = [e.id for e in await h.events()]
            assert set(ids) == expected_ids(run) and len(ids) == len(run.events)
            assert (
                h.metric(
                    "argbridge_component_discarded_events_total",
                    component="arga",
                    kind="source",
                    reason="malformed_json",
                )
                == 1
            )


async def test_clean_eof_of_a_running_run_reconnects(tmp_path):
    async with simulator() as sim:
        sim.faults.eof_every = 2
        run = sim.add_validation_run("r1", steps=2)
        run.publish(len(run.events) - 1)
        async with running_source(tmp_path, sim) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.requests.get("results", 0) >= 3)
                run.publish()
                assert await h.wait_run("validation", "r1") == "done"
            assert {e.id for e in await h.events()} == expected_ids(run)
            assert sim.last_event_ids[1:3] == ["2", "4"]


async def test_restart_resumes_from_the_stored_last_event_id(tmp_path):
    from argbridge.journal import Journal

    async with simulator() as sim:
        run = sim.add_validation_run("r1", steps=3)
        run.publish(3)
        async with Journal(tmp_path / "journal.db", sinks=["s"]) as journal:
            async with running_source(tmp_path, sim, journal=journal, runs=["r1"]) as h:

                async def stored() -> bool:
                    return await journal.get_state("arga:arga:sse:r1:last_id") == "3"

                await eventually(stored)
            assert sim.open_streams in (0, 1)
        run.publish(len(run.events) - 1 - run.published)
        async with Journal(tmp_path / "journal.db", sinks=["s"]) as journal:
            async with running_source(tmp_path, sim, journal=journal) as h:
                # Resumed from the persisted follow list (no `runs` in config this time).
                assert ("validation", "r1") in h.source.runs
                with anyio.fail_after(10):
                    await sim.wait_until(lambda: len(sim.last_event_ids) >= 2)
                    run.publish()
                    assert await h.wait_run("validation", "r1") == "done"
                ids = [e.id for e in await h.events()]
        assert sim.last_event_ids[1] == "3"
        assert len(ids) == len(set(ids)) and set(ids) == expected_ids(run)


async def test_concurrency_cap_on_open_streams(tmp_path):
    async with simulator() as sim:
        runs = [sim.add_validation_run(f"r{i}", steps=1, published=1) for i in range(4)]
        async with running_source(tmp_path, sim, max_streams=2) as h:
            for r in runs:
                await h.source.follow(r.run_id, "validation")
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.open_streams == 2)
                assert sim.streams_opened == 2
                for r in runs:
                    r.publish()
                for r in runs:
                    assert await h.wait_run("validation", r.run_id) == "done"
            assert sim.max_open_streams == 2


async def test_heartbeats_keep_an_idle_stream_open_within_the_read_timeout(tmp_path):
    # Heartbeats every 50 ms, read timeout 2 s: an idle period of several heartbeats
    # does not cost a reconnect (httpx's default 5 s read timeout would, with 15 s pings).
    async with simulator(heartbeat=0.05) as sim:
        run = sim.add_validation_run("r1", steps=1)
        async with running_source(tmp_path, sim, read_timeout=2.0) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.streams_opened == 1)
                start = sim.bytes_sent
                await sim.wait_until(lambda: sim.bytes_sent >= start + 5 * len(b": ping\n\n"))
                run.publish()
                assert await h.wait_run("validation", "r1") == "done"
            assert sim.requests["results"] == 1


async def test_silence_beyond_the_read_timeout_reconnects(tmp_path):
    async with simulator(heartbeat=30) as sim:
        run = sim.add_validation_run("r1", steps=1)
        async with running_source(tmp_path, sim, read_timeout=0.2) as h:
            await h.source.follow("r1", "validation")
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.requests.get("results", 0) >= 2)
                run.publish()
                assert await h.wait_run("validation", "r1") == "done"
            assert h.metric("argbridge_source_reconnects_total", component="arga") >= 1


async def test_finished_runs_are_remembered_up_to_a_bound(tmp_path, monkeypatch):
    """Issue 17: a FollowedRun per run ever followed stayed in memory forever."""
    from argbridge.sources.arga import source as arga_source

    monkeypatch.setattr(arga_source, "FINISHED_MEMORY", 3)
    async with simulator() as sim:
        async with running_source(tmp_path, sim) as h:
            for n in range(8):
                await h.source.follow(f"gone-{n}", "validation")
                with anyio.fail_after(10):
                    assert await h.wait_run("validation", f"gone-{n}") == "not_found"
            assert sorted(run_id for _, run_id in h.source.runs) == ["gone-5", "gone-6", "gone-7"]
