"""The Arga control API on a running daemon."""

from __future__ import annotations

import anyio
import httpx
import pytest

from tests.support.arga_app import running_app
from tests.support.arga_fake import simulator
from tests.support.ops import control_tcp_url

pytestmark = pytest.mark.timeout(30)


async def test_follow_list_and_start(tmp_path):
    async with simulator() as sim:
        run = sim.add_validation_run("r1", steps=1, published=1)
        async with running_app(tmp_path, sim, token="ctl-token-1234") as app:
            base = control_tcp_url(app)
            auth = {"authorization": "Bearer ctl-token-1234"}
            async with httpx.AsyncClient(base_url=base, trust_env=False) as c:
                r = await c.post("/control/follow", json={"run_id": "r1"})
                assert r.status_code == 401
                r = await c.post("/control/follow", json={"run_id": "r1"}, headers=auth)
                assert r.status_code == 202, r.text
                assert r.json()["kind"] == "validation" and r.json()["new"] is True
                r = await c.post("/control/follow", json={"run_id": "r1"}, headers=auth)
                assert r.status_code == 200 and r.json()["new"] is False
                r = await c.post("/control/follow", json={"run_id": ""}, headers=auth)
                assert r.status_code == 400
                assert r.headers["content-type"] == "application/problem+json"
                r = await c.post(
                    "/control/follow", json={"run_id": "x", "source": "nope"}, headers=auth
                )
                assert r.status_code == 404
                with anyio.fail_after(10):
                    await sim.wait_until(lambda: sim.streams_opened == 1)
                run.publish()
                source = app.sources["arga"]
                with anyio.fail_after(10):
                    await source.runs[("validation", "r1")].finished.wait()  # type: ignore[attr-defined]
                r = await c.get("/control/follow", headers=auth)
                assert r.json()["runs"] == [
                    {
                        "source": "arga",
                        "kind": "validation",
                        "run_id": "r1",
                        "origin": "control",
                        "status": "done",
                    }
                ]
                r = await c.post(
                    "/control/start/pr-run", json={"repo": "acme/web", "branch": "b"}, headers=auth
                )
                assert r.status_code == 202 and r.json()["run_id"] == sim.started_runs[0]
                r = await c.post("/control/start/pr-run", json={"repo": "acme/web"}, headers=auth)
                assert r.status_code == 400
                assert "branch" in r.json()["detail"]
                r = await c.post("/control/start/other", json={}, headers=auth)
                assert r.status_code == 404
