"""Dead letters and replay through the control API of a running daemon."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx

from argbridge.config.settings import Settings
from argbridge.runtime import App
from argbridge.sinks.base import SelfDisabling, Wakeable
from argbridge.sinks.webhook import WebhookSink
from tests.conftest import free_port, make_event, settings
from tests.support.daemon import running_app
from tests.support.ops import control_tcp_url
from tests.support.receivers import Reply, WebhookReceiver, serve

TOKEN = "ctl-token-123"
SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXh4eA=="


def daemon_settings(tmp_path: Path, hook_url: str, token: str | None = None) -> Settings:
    http: dict[str, Any] = {"enabled": True, "port": free_port()}
    # The control API on a free loopback TCP port (with the token when given).
    control: dict[str, Any] = {"port": 0}
    if token:
        control["token"] = token
    return settings(
        tmp_path,
        http=http,
        control=control,
        sinks={
            "hook": {
                "type": "webhook",
                "url": hook_url,
                "secrets": [SECRET],
                "allow_private": True,
                "retry_schedule": [0],
            },
            "file": {"type": "file"},
        },
    )


@contextlib.asynccontextmanager
async def dlq_daemon(
    tmp_path: Path, receiver: WebhookReceiver
) -> AsyncIterator[tuple[App, httpx.AsyncClient, Settings]]:
    """The daemon with a webhook sink to ``receiver`` and a file sink, and a client of
    its control API (token ``TOKEN``)."""
    async with serve(receiver.router) as base:
        s = daemon_settings(tmp_path, base + "/hook", token=TOKEN)
        async with (
            running_app(s) as (app, _),
            httpx.AsyncClient(base_url=control_tcp_url(app)) as http,
        ):
            yield app, http, s


async def test_list_replay_dead_letters_and_replay_the_journal(tmp_path):
    receiver = WebhookReceiver([SECRET])
    receiver.default = Reply(500)
    async with dlq_daemon(tmp_path, receiver) as (app, http, s):
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/control/dlq")).status_code == 401
        for n in range(3):
            await app.journal.append(make_event(n))

        with anyio.fail_after(10):
            await app.workers["hook"].caught_up()
        assert await app.journal.count_dead_letters("hook") == 3
        listing = (await http.get("/control/dlq", params={"sink": "hook"}, headers=auth)).json()
        assert listing["total"] == 3
        assert {i["reason"] for i in listing["items"]} == {"gave up after 1 attempt(s): HTTP 500"}
        metric = app.metrics.registry.get_sample_value(
            "argbridge_sink_dead_letters", {"component": "hook"}
        )
        assert metric == 3

        receiver.default = Reply(204)
        first = listing["items"][0]["id"]
        r = await http.post("/control/dlq/replay", json={"ids": [first]}, headers=auth)
        assert r.json()["requeued"] == 1
        await receiver.wait_for(4)
        r = await http.post("/control/dlq/replay", json={"sink": "hook"}, headers=auth)
        assert r.json()["requeued"] == 2
        await receiver.wait_for(6)

        hook = app.sinks["hook"]
        assert isinstance(hook, WebhookSink)
        with anyio.fail_after(10):
            await hook.retries_caught_up()
        assert await app.journal.count_retries("hook") == 0
        assert await app.journal.count_dead_letters("hook") == 0
        delivered = {r.payload["id"] for r in receiver.received if r.payload}
        assert delivered == {make_event(n).id for n in range(3)}

        # Journal replay: rewind the file sink and re-deliver everything since then.
        r = await http.post("/control/replay", json={"sink": "file", "since": "1h"}, headers=auth)
        assert r.json()["events"] == 3

        with anyio.fail_after(10):
            await app.workers["file"].caught_up()
        p = (await http.get("/control/sinks/file/progress", headers=auth)).json()
        assert p["cursor"] == p["last_seq"] and p["backlog"] == 0
        lines = (s.state_dir / "events.jsonl").read_bytes().splitlines()
        assert len(lines) == 6

        # Clear errors.
        r = await http.post("/control/replay", json={"sink": "nope", "since": "1h"}, headers=auth)
        assert r.status_code == 404 and "no sink named" in r.json()["detail"]
        r = await http.post("/control/replay", json={"sink": "file"}, headers=auth)
        assert r.status_code == 400
        r = await http.post(
            "/control/replay", json={"sink": "file", "since": "yesterday-ish"}, headers=auth
        )
        assert r.status_code == 400 and "RFC 3339" in r.json()["detail"]
        r = await http.post(
            "/control/replay", json={"sink": "file", "since": time.time() + 60}, headers=auth
        )
        assert r.status_code == 404


async def test_replay_enables_an_endpoint_disabled_by_410_and_wakes_its_retry_loop(tmp_path):
    """The webhook sink is :class:`SelfDisabling` and :class:`Wakeable`: ``dlq replay``
    enables it again and wakes its retry loop (asleep for ``IDLE_POLL`` otherwise)."""
    receiver = WebhookReceiver([SECRET])
    receiver.default = Reply(410)
    async with dlq_daemon(tmp_path, receiver) as (app, http, _):
        hook = app.sinks["hook"]
        assert isinstance(hook, SelfDisabling) and isinstance(hook, Wakeable)
        await app.journal.append(make_event(1))
        with anyio.fail_after(10):
            await app.workers["hook"].caught_up()  # delivered: 410, dead-lettered
        assert await app.journal.count_dead_letters("hook") == 1
        assert "endpoint disabled" in hook.health().detail
        receiver.default = Reply(204)
        auth = {"authorization": f"Bearer {TOKEN}"}
        r = await http.post("/control/dlq/replay", json={"sink": "hook"}, headers=auth)
        assert r.json()["requeued"] == 1
        await receiver.wait_for(2)
        assert receiver.received[-1].payload["id"] == make_event(1).id
        assert hook.health().detail == "ok"
