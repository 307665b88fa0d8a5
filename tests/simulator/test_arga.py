"""The Arga simulator itself: documented endpoints and scripted faults, over loopback."""

from __future__ import annotations

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from argbridge.sse import decode_all
from tests.support.arga_fake import simulator

pytestmark = pytest.mark.timeout(30)
AUTH = {"authorization": "Bearer test-token-123456"}


async def test_endpoints_and_faults():
    async with simulator() as sim:
        run = sim.add_validation_run("r1", steps=1)
        run.publish()
        demo = sim.add_demo_run("d1", steps=2)
        demo.publish(1)
        async with httpx.AsyncClient(base_url=sim.base_url, trust_env=False) as c:
            assert (await c.get("/runs/r1")).status_code == 401
            r = await c.get("/validate/r1/results", headers=AUTH)
            assert r.headers["content-type"].startswith("text/event-stream")
            # A terminal run answers with its single terminal event (the documented way).
            assert [e.data for e in decode_all(r.content)] == [
                '{"type":"run_complete","status":"complete"}'
            ]
            details = (await c.get("/runs/r1", headers=AUTH)).json()
            assert details["status"] == "complete" and len(details["results_json"]) == 1
            listing = (await c.get("/validation/runs", headers=AUTH)).json()
            assert listing["items"][0]["run_id"] == "r1"
            assert (await c.get("/demo-runner/runs/d1", headers=AUTH)).json()["events_json"]
            assert (await c.get("/demo-runner/runs", headers=AUTH)).json()["runs"][0]["id"] == "d1"
            sim.faults.bom = True
            sim.faults.replay_history = True
            r = await c.get("/validate/r1/results", headers=AUTH)
            assert r.content.startswith(b"\xef\xbb\xbf")
            assert len(decode_all(r.content)) == len(run.events)
            sim.faults.statuses = [429]
            sim.faults.retry_after = "3"
            r = await c.get("/validate/r1/results", headers=AUTH)
            assert r.status_code == 429 and r.headers["retry-after"] == "3"
            assert (await c.get("/validate/nope/results", headers=AUTH)).status_code == 404
        ws_url = sim.base_url.replace("http", "ws") + "/demo-runner/runs/d1/stream?token=bad"
        async with connect(ws_url, proxy=None) as ws:
            with pytest.raises(ConnectionClosedError) as exc:
                await ws.recv()
            assert exc.value.rcvd is not None and exc.value.rcvd.code == 1008
        sim.faults.statuses = [403]
        with pytest.raises(InvalidStatus):
            async with connect(ws_url, proxy=None):
                pass
