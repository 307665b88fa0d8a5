"""``/control/status`` and ``/control/tail`` against a running in-process daemon (over its
control socket, or its TCP control listener with a token)."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import orjson

from argbridge.runtime import App
from tests.conftest import free_port, make_event
from tests.support.ops import (
    all_delivered,
    control_client,
    control_tcp_url,
    ops_settings,
    running,
    wait_until,
)


async def test_status_reports_components_backlogs_and_dead_letters(tmp_path):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app):
        await wait_until(lambda: all_delivered(app))
        records = await app.journal.read_after(0, 1)
        await app.journal.dead_letter("file", records[0], "refused for the test", attempts=3)
        async with control_client(app) as client:
            response = await client.get("/control/status")
        assert response.status_code == 200
        doc = response.json()
        last = app.journal.last_seq
        assert doc["ready"] is True and doc["not_ready"] == []
        assert doc["paused"] is False
        assert doc["journal"]["last_seq"] == last
        assert set(doc["components"]) == {"journal", "sink:file", "source:sample"}
        sink = doc["sinks"]["file"]
        assert sink["type"] == "file" and sink["started"] is True
        assert sink["backlog"] == 0 and sink["cursor"] == last
        assert sink["sent"] == last and sink["last_error"] is None
        assert sink["dead_letters"] == 1 and doc["dead_letters"] == 1
        source = doc["sources"]["sample"]
        assert source["type"] == "replay" and source["received"] == last
        assert doc["open_streams"] == 0


async def test_status_names_the_failing_sink_and_its_last_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    app = App(
        ops_settings(
            tmp_path,
            free_port(),
            sinks={"file": {"type": "file", "path": str(blocker / "x" / "events.jsonl")}},
        ),
        handle_signals=False,
    )
    async with running(app):
        await wait_until(lambda: app.workers["file"].last_error is not None)
        async with control_client(app) as client:
            doc = (await client.get("/control/status")).json()
        assert doc["ready"] is False
        assert doc["not_ready"] == ["sink:file"]
        assert doc["sinks"]["file"]["started"] is False
        assert doc["sinks"]["file"]["last_error"].startswith("start: ")
        assert doc["sinks"]["file"]["backlog"] == doc["journal"]["last_seq"]


async def test_control_api_needs_the_token_when_configured(tmp_path):
    app = App(
        ops_settings(
            tmp_path,
            free_port(),
            control={"port": 0, "token": "s3cret-token-value"},
        ),
        handle_signals=False,
    )
    async with running(app):
        async with httpx.AsyncClient(base_url=control_tcp_url(app)) as client:
            for path in ("/control/status", "/control/tail"):
                denied = await client.get(path)
                assert denied.status_code == 401
                assert denied.headers["content-type"] == "application/problem+json"
                wrong = await client.get(path, headers={"authorization": "Bearer nope"})
                assert wrong.status_code == 401
            ok = await client.get(
                "/control/status", headers={"authorization": "Bearer s3cret-token-value"}
            )
            assert ok.status_code == 200
            assert "s3cret-token-value" not in ok.text


def _lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


async def test_tail_lists_recent_events_filtered_by_type(tmp_path):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app):
        await wait_until(lambda: all_delivered(app))
        last = app.journal.last_seq
        async with control_client(app) as client:
            everything = await client.get("/control/tail", params={"after": 0})
            assert everything.status_code == 200
            assert everything.headers["content-type"] == "application/x-ndjson"
            items = _lines(everything.text)
            assert [i["seq"] for i in items] == list(range(1, last + 1))
            assert {"seq", "appended_at", "event"} <= set(items[0])

            recent = _lines((await client.get("/control/tail", params={"n": 3})).text)
            assert [i["seq"] for i in recent] == [last - 2, last - 1, last]

            argus = _lines(
                (await client.get("/control/tail", params={"after": 0, "type": "argus."})).text
            )
            assert argus and all(i["event"]["type"].startswith("argus.") for i in argus)
            assert len(argus) < len(items)

            limited = _lines(
                (await client.get("/control/tail", params={"after": 0, "limit": 2})).text
            )
            assert [i["seq"] for i in limited] == [1, 2]

            bad = await client.get("/control/tail", params={"after": "-1"})
            assert bad.status_code == 400
            assert "after must be a non-negative integer" in bad.json()["detail"]


async def test_tail_follow_streams_new_events_as_they_are_journaled(tmp_path):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app):
        await wait_until(lambda: all_delivered(app))
        last = app.journal.last_seq
        params = {"after": str(last), "follow": "1", "type": "arga.validation."}
        async with (
            control_client(app, timeout=10) as client,
            client.stream("GET", "/control/tail", params=params) as response,
        ):
            assert response.status_code == 200
            lines = response.aiter_lines()
            # Filtered out (wrong type), then one that matches.
            await app.journal.append(make_event(1, type_="argus.incident.created"))
            await app.journal.append(make_event(2, type_="arga.validation.step_result"))
            with anyio.fail_after(10):
                line = await anext(lines)
                while not line.strip():
                    line = await anext(lines)
            item = orjson.loads(line)
            assert item["seq"] == last + 2
            assert item["event"]["type"] == "arga.validation.step_result"
        # The client went away; the daemon still stops promptly (checked by `running`).


async def test_tail_follow_ends_when_the_daemon_stops(tmp_path):
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    got: list[str] = []
    async with running(app):
        await wait_until(lambda: all_delivered(app))
        client = control_client(app, timeout=10)
        try:
            async with client.stream(
                "GET", "/control/tail", params={"follow": "1", "n": "0"}
            ) as response:
                assert response.status_code == 200
                app.request_shutdown()
                with anyio.fail_after(10):
                    async for line in response.aiter_lines():
                        got.append(line)
        finally:
            await client.aclose()
    assert [line for line in got if line.strip()] == []
