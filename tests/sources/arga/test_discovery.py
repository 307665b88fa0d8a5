"""Run discovery (listing polls) and starting runs (url-run / pr-run)."""

from __future__ import annotations

import anyio
import pytest

from argbridge.sources.arga.discovery import non_terminal_ids
from tests.support.arga_fake import running_source, simulator

pytestmark = pytest.mark.timeout(30)


def test_non_terminal_ids():
    body = {
        "items": [
            {"run_id": "new", "status": "running"},
            {"run_id": "old", "status": "complete"},
            {"run_id": "q", "status": "queued"},
            "junk",
        ]
    }
    assert non_terminal_ids(body, "items", "run_id") == ["q", "new"]
    with pytest.raises(ValueError, match="items"):
        non_terminal_ids({"runs": []}, "items", "run_id")


async def test_polling_follows_new_non_terminal_runs_once(tmp_path):
    async with simulator() as sim:
        live = sim.add_validation_run("live", steps=1, published=1)
        sim.add_validation_run("finished", steps=1).publish()
        demo = sim.add_demo_run("demo-live", steps=2)
        async with running_source(tmp_path, sim) as h:
            assert await h.discover_once() == 2
            assert await h.discover_once() == 0
            assert set(h.source.runs) == {("validation", "live"), ("demo", "demo-live")}
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.open_streams == 2)
                live.publish()
                demo.publish()
                assert await h.wait_run("validation", "live") == "done"
                assert await h.wait_run("demo", "demo-live") == "done"
            # A finished run is not followed again by the next poll.
            assert await h.discover_once() == 0


async def test_poll_loop_runs_at_the_interval(tmp_path):
    async with simulator() as sim:
        sim.add_validation_run("live", steps=1, published=1)
        async with running_source(tmp_path, sim, poll_interval=5) as h:
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.requests.get("list", 0) >= 3)
            assert 5.0 in h.clock.sleeps
            assert ("validation", "live") in h.source.runs


async def test_discovery_auth_failure_alerts_once(tmp_path):
    async with simulator() as sim:
        async with running_source(tmp_path, sim, api_key="bad-key-0000") as h:
            await h.discover_once()
            await h.discover_once()
            assert await h.types() == ["argbridge.source.auth_failed"]


async def test_start_pr_run_follows_the_returned_stream_then_the_run(tmp_path):
    async with simulator() as sim:
        async with running_source(tmp_path, sim) as h:
            result = await h.source.start_run("pr-run", {"repo": "acme/web", "branch": "main"})
            run_id = result["run_id"]
            assert run_id == sim.started_runs[0]
            run = sim.validation_runs[run_id]
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.requests.get("results", 0) >= 1)
                run.publish()
                assert await h.wait_run("validation", run_id) == "done"
            types = await h.types()
            assert types[:2] == ["arga.validation.planning", "arga.validation.plan_ready"]
            assert types[-1] == "arga.validation.run.complete"


async def test_start_url_run_with_prompt_follows_the_run_id(tmp_path):
    async with simulator() as sim:
        async with running_source(tmp_path, sim) as h:
            result = await h.source.start_run(
                "url-run", {"url": "https://staging.example.com", "prompt": "log in"}
            )
            assert result["status"] == "queued"
            run = sim.validation_runs[result["run_id"]]
            with anyio.fail_after(10):
                await sim.wait_until(lambda: sim.streams_opened >= 1)
                run.publish()
                assert await h.wait_run("validation", run.run_id) == "done"


async def test_start_errors_are_reported_not_raised(tmp_path):
    async with simulator() as sim:
        async with running_source(tmp_path, sim) as h:
            result = await h.source.start_run("url-run", {"url": "ftp://x"})
            assert result == {"error": 400, "detail": "A valid public http(s) URL is required."}
