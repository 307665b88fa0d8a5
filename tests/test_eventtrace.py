"""Where did my event go (issue 11 item 7): the lookup over a real journal, then the real
daemon between signed webhooks and real receivers, asked with ``argbridge trace``."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx
import orjson
import pytest

from argbridge.config.settings import load_settings
from argbridge.eventtrace import trace_events
from argbridge.journal import Journal
from argbridge.router import Router
from tests.conftest import free_port, make_event
from tests.support.process import Daemon, run_cli
from tests.support.receivers import Reply, WebhookReceiver, serve
from tests.support.webhooks import SECRET, incident_body, sw_headers

SINKS = ["done", "retry", "dead", "late", "other"]


def _router() -> Router:
    s = load_settings(
        None,
        http={"enabled": False},
        sinks={n: {"type": "file", "path": f"{n}.jsonl"} for n in SINKS},
        routes=[
            {"sinks": ["done", "retry", "dead", "late"]},
            {"sinks": ["other"], "filters": [{"prefix": {"type": "argus."}}]},
        ],
    )
    return Router.from_settings(s)


async def test_each_sink_state_of_an_event_and_of_a_subject(tmp_path: Path):
    async with Journal(tmp_path / "j.db", sinks=SINKS) as journal:
        events = [make_event(n, subject="run-A" if n % 2 else "run-B") for n in range(6)]
        await journal.append_many(events)
        records = await journal.read_after(0, 100)
        target = records[3]  # run-A, seq 4
        await journal.ack("done", 6)
        await journal.ack("retry", 6)
        await journal.schedule_retry("retry", target, 2, 1_700_000_500.0, "HTTP 503")
        await journal.ack("dead", 6)
        await journal.dead_letter("dead", target, "HTTP 400 abort", 1)
        await journal.ack("late", 2)
        await journal.ack("other", 6)

        result = await trace_events(journal, _router(), SINKS, event_id=target.event.id)
        [ev] = result.events
        assert (ev.seq, ev.event.type, ev.event.source) == (4, target.event.type, "urn:test")
        assert ev.journaled_at == target.appended_at
        states = {n: s.to_json() for n, s in ev.sinks.items()}
        assert states["done"] == {"state": "delivered", "cursor": 6}
        assert states["retry"] == {
            "state": "retrying",
            "attempt": 2,
            "next_due": 1_700_000_500.0,
            "last_error": "HTTP 503",
        }
        assert states["dead"]["state"] == "dead-lettered"
        assert states["dead"]["reason"] == "HTTP 400 abort"
        assert states["late"] == {"state": "pending", "cursor": 2, "behind": 2}
        assert states["other"] == {"state": "not routed"}

        by_subject = await trace_events(journal, _router(), SINKS, subject="run-A")
        assert [t.seq for t in by_subject.events] == [2, 4, 6]
        assert not by_subject.truncated
        none = await trace_events(journal, _router(), SINKS, event_id="nope")
        assert none.events == [] and none.scanned == 6
        # A subject mentioned only inside data is not a match.
        await journal.append(make_event(99, subject="x", type_="t.x"))
        with pytest.raises(ValueError, match="exactly one"):
            await trace_events(journal, _router(), SINKS)


@pytest.mark.slow
async def test_argbridge_trace_against_the_running_daemon(tmp_path: Path):
    ok = WebhookReceiver([SECRET])
    failing = WebhookReceiver([SECRET])
    failing.default = Reply(503)
    refusing = WebhookReceiver([SECRET])
    refusing.default = Reply(400, {"webhook-delivery": "abort-message"})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with serve(ok.router) as ok_url, serve(failing.router) as fail_url:
        async with serve(refusing.router) as refuse_url:

            def hook(name: str, url: str) -> str:
                return (
                    f'[sinks.{name}]\ntype = "webhook"\nurl = "{url}/hook"\n'
                    f'secrets = ["{SECRET}"]\nallow_private = true\n'
                    'retry_schedule = [0, "1h"]\nretry_jitter = 0\n'
                )

            config = tmp_path / "argbridge.toml"
            config.write_text(
                f'state_dir = "{tmp_path / "state"}"\n[log]\nformat = "json"\n'
                f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
                f'[sources.argus]\ntype = "argus-webhook"\nsecrets = ["{SECRET}"]\n'
                + hook("ok", ok_url)
                + hook("failing", fail_url)
                + hook("refusing", refuse_url)
                + f'[sinks.kafka]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:{free_port()}"\n'
                'request_timeout = "1s"\ncall_timeout = "2s"\n'
                '[[routes]]\nsinks = ["ok", "failing", "refusing", "kafka"]\n'
            )
            with Daemon(config) as daemon:
                await anyio.to_thread.run_sync(daemon.wait_event, "http.listening")
                ids = []
                async with httpx.AsyncClient(timeout=10) as client:
                    for action in ("incident.created", "incident.resolved"):
                        body = incident_body("INC-7", action=action)
                        r = await client.post(
                            f"{base}/webhooks/argus",
                            content=body,
                            headers={**sw_headers(body), "content-type": "application/json"},
                        )
                        assert r.status_code == 200, r.text
                        ids.append(r.json()["id"])
                    # The daemon is an outside process: poll its observable state.
                    deadline = time.monotonic() + 30
                    control = httpx.AsyncClient(
                        transport=httpx.AsyncHTTPTransport(
                            uds=str(tmp_path / "state" / "control.sock")
                        ),
                        base_url="http://argbridge",
                        timeout=10,
                    )
                    async with control:
                        while True:
                            r = await control.get("/control/trace", params={"subject": "INC-7"})
                            doc = r.json()
                            states = [
                                {n: s["state"] for n, s in e["sinks"].items()}
                                for e in doc.get("events", [])
                            ]
                            want = {
                                "ok": "delivered",
                                "failing": "retrying",
                                "refusing": "dead-lettered",
                                "kafka": "pending",
                            }
                            if len(states) == 2 and all(s == want for s in states):
                                break
                            assert time.monotonic() < deadline, doc
                            await anyio.sleep(0.05)

                one = await anyio.to_thread.run_sync(
                    lambda: run_cli("trace", ids[0], "--config", str(config))
                )
                assert one.returncode == 0, one.stderr
                out = one.stdout
                assert f"event {ids[0]}" in out
                assert "type     argus.incident.created" in out
                assert "sink ok        delivered" in out
                assert "retrying: attempt 1, next " in out and "last error: HTTP 503" in out
                assert "dead-lettered (dlq id" in out
                assert "pending (" in out
                subject = await anyio.to_thread.run_sync(
                    lambda: run_cli(
                        "trace", "--subject", "INC-7", "--config", str(config), "--json"
                    )
                )
                assert subject.returncode == 0, subject.stderr
                doc = orjson.loads(subject.stdout)
                assert [e["id"] for e in doc["events"]] == ids
                missing = await anyio.to_thread.run_sync(
                    lambda: run_cli("trace", "no-such-event", "--config", str(config))
                )
                assert missing.returncode == 1
                assert "no event 'no-such-event'" in missing.stdout
                assert daemon.stop() == 0
