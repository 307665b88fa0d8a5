"""The demo's Argos CI stand-in, polled by the real argos-ci profile."""

from __future__ import annotations

import anyio
import pytest

from argbridge.demo.argos_ci import ArgosCIStandIn
from argbridge.http.embed import serve
from tests.support.generic import running
from tests.support.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(30)


def test_builds_progress_and_every_third_fails():
    ci = ArgosCIStandIn("t")
    for _ in range(4):
        ci.tick()
    oldest = ci.builds[-1]
    assert oldest["number"] == 1 and oldest["status"] == "complete"
    assert oldest["conclusion"] == "success"
    for _ in range(3):
        ci.tick()
    third = next(b for b in ci.builds if b["number"] == 3)
    assert third["conclusion"] == "failure"
    assert ci.builds[0]["status"] == "pending"


async def test_the_argos_ci_profile_follows_the_stand_in(tmp_path):
    ci = ArgosCIStandIn()
    clock = ManualClock()
    async with serve(ci.router) as base:
        cfg = {"type": "argos-ci", "base_url": f"{base}/v2", "token": ci.token, "interval": 1}
        async with running(tmp_path, cfg, clock=clock) as r:
            for _ in range(6):
                ci.tick()
                with anyio.fail_after(10):
                    await clock.wait_sleeping()
                clock.advance(1)
            with anyio.fail_after(10):
                await clock.wait_sleeping()
            types = await r.types()
    assert "argos.ci.build.failure" in types and "argos.ci.build.success" in types
    assert types.count("argos.ci.build.pending") == 6
