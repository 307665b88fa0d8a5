"""The vendor profiles end to end: Argus E2E, Argos CI and Argos Omni against their
loopback fakes, through the registry's expansion to the generic sources."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from argbridge.journal import Journal
from argbridge.sources.group import SourceGroup
from argbridge.sources.poll import PollSource
from argbridge.sources.sse import SSESource
from tests.support.fake_streams import Listing, fake_upstream
from tests.support.fake_vendors import (
    E2E_START,
    E2E_STREAM,
    ArgusE2E,
    argos_builds,
    build,
    e2e_frames,
    omni_error,
    omni_listing,
)
from tests.support.generic import running
from tests.support.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(30)


def e2e_config(base: str, **overrides):
    cfg = {
        "type": "argus-e2e",
        "base_url": base,
        "api_key": "argus_sk_test_123456",
        "start": {"project_id": "p1", "test_ids": ["login"], "options": {"headless": True}},
        "reconnect": {"initial": 1, "max": 4},
    }
    cfg.update(overrides)
    return cfg


async def test_argus_e2e_starts_once_streams_and_ends_on_complete(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        e2e = ArgusE2E(fake).install()
        async with Journal(tmp_path / "journal.db", sinks=["s"]) as j:
            async with running(tmp_path, e2e_config(fake.base), clock=clock, journal=j) as r:
                assert isinstance(r.source, SSESource)
                await fake.wait_for(lambda: "run-1" in e2e.runs and e2e.runs["run-1"].open == 1)
                stream = e2e.runs["run-1"]
                stream.drop_after = 1
                stream.publish(*e2e_frames()[:2])
                await r.wait_events(2)  # the status (gap-fill) and state_update
                e2e.status["run-1"] = {"run_id": "run-1", "status": "running"}
                with anyio.fail_after(10):
                    await clock.advance_to_next()  # the stream dropped mid-run: reconnect
                await r.wait_events(4)  # + the new status and the log
            # A restart mid-run: the stored run is streamed again, never started again.
            async with running(tmp_path, e2e_config(fake.base), clock=clock, journal=j) as r:
                await fake.wait_for(lambda: stream.sessions == 3)
                stream.publish(*e2e_frames()[2:], end=True)
                with anyio.fail_after(10):
                    await r.done.wait()
                events = await r.events()
        assert len(e2e.starts) == 1
        assert e2e.starts[0] == {
            "project_id": "p1",
            "test_ids": ["login"],
            "options": {"headless": True},
        }
        start = fake.hits(E2E_START)[0]
        assert start.headers["x-api-key"] == "argus_sk_test_123456"
        assert start.headers["idempotency-key"]
        assert all(h.json() == {"run_id": "run-1"} for h in fake.hits(E2E_STREAM))
        assert [e.type for e in events if e.type != "argus.e2e.status"] == [
            "argus.e2e.state_update",
            "argus.e2e.log",
            "argus.e2e.screenshot",
            "argus.e2e.complete",
        ]
        # The run's status after every (re)connect, each distinct state once.
        statuses = [e.data["status"] for e in events if e.type == "argus.e2e.status"]
        assert statuses == ["pending", "running"]
        assert len(fake.hits("/api/v1/tests/run-1")) == 3
        complete = events[-1]
        assert complete.subject == "run-1"
        assert complete.data["passed"] == 9 and complete.data["failed"] == 1
        assert complete.severity == "high"
        assert complete.data["url"] == "https://app.argus.io/runs/run-1"
        assert r.source.status == "done"


async def test_argus_e2e_start_with_no_answer_is_never_sent_again(tmp_path):
    async with fake_upstream() as fake:
        e2e = ArgusE2E(fake, drop_next_start=True).install()
        async with Journal(tmp_path / "journal.db", sinks=["s"]) as j:
            for _ in range(2):
                async with running(tmp_path, e2e_config(fake.base), journal=j) as r:
                    with anyio.fail_after(10):
                        await r.source.stopped.wait()
                    assert r.source.status == "start_unknown"
                    assert not r.source.health().ready
        assert len(e2e.starts) == 1


async def test_argus_e2e_known_run_with_jwt_and_a_huge_screenshot(tmp_path):
    shot = "iVBORw0KGgo" + "Q" * 2_000_000
    async with fake_upstream() as fake:
        e2e = ArgusE2E(fake).install()
        stream = e2e.run("known-7")
        stream.publish(*e2e_frames(screenshot=shot, failed=0), end=True)
        cfg = e2e_config(fake.base, start=None, api_key=None, jwt="eyJ.jwt.sig", run_id="known-7")
        async with running(tmp_path, cfg) as r:
            with anyio.fail_after(10):
                await r.done.wait()
            events = await r.events()
        assert e2e.starts == []
        assert fake.hits(E2E_STREAM)[0].headers["authorization"] == "Bearer eyJ.jwt.sig"
        shot_event = next(e for e in events if e.type == "argus.e2e.screenshot")
        assert shot_event.data["upstream"]["base64"]["size"] == len(shot)
        assert shot_event.data["truncated"][0]["path"] == "base64"
        assert events[-1].severity is None  # nothing failed


async def test_argos_ci_one_event_per_build_status_change(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        listing = argos_builds(Listing([build(2, "pending"), build(1, "complete", "success")]))
        fake.add("GET", "/v2/project/builds", listing.handler)
        cfg = {"type": "argos-ci", "base_url": f"{fake.base}/v2", "token": "argos_tok_1"}
        async with running(tmp_path, cfg, clock=clock) as r:
            assert isinstance(r.source, PollSource)
            with anyio.fail_after(10):
                await clock.wait_sleeping()
            listing.items[0] = build(2, "complete", "failure")
            clock.advance(30)
            await clock.wait_sleeping()
            clock.advance(30)  # nothing changed: nothing new
            await clock.wait_sleeping()
            events = await r.events()
        assert [e.type for e in events] == [
            "argos.ci.build.pending",
            "argos.ci.build.success",
            "argos.ci.build.failure",
        ]
        failed = events[-1]
        assert failed.severity == "high" and failed.subject == "b2"
        assert failed.data["url"] == "https://app.argos-ci.com/acme/web/builds/2"
        assert failed.data["number"] == 2 and failed.data["conclusion"] == "failure"
        request = fake.hits("/v2/project/builds")[0]
        assert request.headers["authorization"] == "Bearer argos_tok_1"
        assert request.query == {"page": "1", "perPage": "30"}


async def test_argos_omni_items_and_analyses_with_one_auth_alert(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        items = omni_listing(Listing([{"id": f"it{k}", "status": "uploaded"} for k in range(55)]))
        analyses = omni_listing(Listing([{"id": "an1", "itemId": "it1", "status": "failed"}]))
        fake.add("GET", "/v1/workflows/wf1/items", items.handler)
        fake.add("GET", "/v1/workflows/wf1/analyses", analyses.handler)
        cfg = {
            "type": "argos-omni",
            "base_url": f"{fake.base}/v1",
            "api_key": "omni-key-1",
            "workflow_id": "wf1",
        }
        async with running(tmp_path, cfg, clock=clock) as r:
            assert isinstance(r.source, SourceGroup)
            with anyio.fail_after(10):
                await clock.wait_sleeping(2)
            events = await r.events()
            assert r.source.health().ready
            fake.fail("/v1/workflows/wf1/analyses", 401, body=omni_error(401, "UNAUTHORIZED"))
            clock.advance(30)
            await clock.wait_sleeping(1)
            part: Any = r.source.parts["src.analyses"]
            with anyio.fail_after(10):
                await part.stopped.wait()
            alerts = [e for e in await r.events() if e.type == "argbridge.source.auth_failed"]
            assert not r.source.health().ready
        types = [e.type for e in events]
        assert types.count("argos.omni.item.uploaded") == 55
        assert types.count("argos.omni.analysis.failed") == 1
        analysis = next(e for e in events if e.type == "argos.omni.analysis.failed")
        assert analysis.severity == "high" and analysis.partitionkey == "wf1"
        assert analysis.data["item"] == "it1"
        assert len(alerts) == 1 and "Argos Omni refused" in alerts[0].data["message"]
        assert alerts[0].data["detail"] == "HTTP 401: UNAUTHORIZED unauthorized"
        request = fake.hits("/v1/workflows/wf1/items")[0]
        assert request.headers["x-api-key"] == "omni-key-1"
        assert request.query == {"page": "1", "size": "50"}


async def test_a_profile_runs_in_the_daemon_with_routes_and_readiness(tmp_path):
    from argbridge.runtime import App
    from tests.conftest import settings

    async with fake_upstream() as fake:
        listing = argos_builds(Listing([build(1, "complete", "failure")]))
        fake.add("GET", "/v2/project/builds", listing.handler)
        s = settings(
            tmp_path,
            sources={"ci": {"type": "argos-ci", "base_url": f"{fake.base}/v2", "token": "tok-1"}},
            sinks={"file": {"type": "file", "path": "events.jsonl"}},
            routes=[{"sinks": ["file"], "filters": [{"exact": {"severity": "high"}}]}],
        )
        app = App(s, handle_signals=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(app.run)
            with anyio.fail_after(20):
                await app.ready.wait()
                journal = app.journal
                while journal.last_seq < 1:
                    await journal.wait_for_events(journal.last_seq)
                assert app.health()["source:ci"].ready
            app.request_shutdown()  # drains the file sink before run() returns
    lines = (tmp_path / "state" / "events.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"argos.ci.build.failure"' in lines[0]


async def test_argus_e2e_start_refused_for_now_is_retried_after_retry_after(tmp_path):
    clock = ManualClock()
    async with fake_upstream() as fake:
        e2e = ArgusE2E(fake).install()
        fake.fail(E2E_START, 429, headers={"retry-after": "20"})
        async with running(tmp_path, e2e_config(fake.base), clock=clock) as r:
            with anyio.fail_after(10):
                await clock.wait_sleeping()
                assert clock.pending == [20.0]
                await clock.advance_to_next()
            with anyio.fail_after(10):
                await r.source.started.wait()  # following the started run
            assert r.source.run_id == "run-1"
        assert len(fake.hits(E2E_START)) == 2 and len(e2e.starts) == 1


async def test_argus_e2e_start_refused_credentials_alert_and_stop(tmp_path):
    async with fake_upstream() as fake:
        e2e = ArgusE2E(fake).install()
        fake.fail(E2E_START, 401)
        async with running(tmp_path, e2e_config(fake.base)) as r:
            with anyio.fail_after(10):
                await r.source.stopped.wait()
            types = await r.types()
        assert types == ["argbridge.source.auth_failed"]
        assert r.source.status == "auth_failed" and e2e.starts == []
