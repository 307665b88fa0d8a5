"""The demo's Argus: lifecycle bodies normalise as the sample does; signed delivery to a
real daemon's ``POST /webhooks/argus`` is accepted and journaled."""

from __future__ import annotations

import itertools

import anyio

from argbridge.demo.argus_sender import ArgusSender, lifecycle, schedule
from argbridge.demo.config import new_secret
from argbridge.normalize.argus import incident_event
from tests.conftest import settings
from tests.support.daemon import running_app
from tests.support.ops import wait_until


def test_lifecycle_normalises_to_the_three_incident_events():
    events = [
        incident_event("argus", body, delivery_id=f"d{i}")
        for i, body in enumerate(lifecycle(0, 1_800_000_000.0))
    ]
    assert [e.type for e in events] == [
        "argus.incident.created",
        "argus.incident.acknowledged",
        "argus.incident.resolved",
    ]
    assert {e.subject for e in events} == {"INC-4000"}
    assert {e.severity for e in events} == {"P1"}
    assert events[0].time == "2027-01-15T08:00:00Z"
    assert [e.data["status"] for e in events] == ["open", "acknowledged", "resolved"]
    assert events[2].data["previous_status"] == "acknowledged"
    assert events[0].data["classification"]["auto_classified"] is True


def test_schedule_overlaps_incidents():
    ticks = [[(s.number, s.action) for s in steps] for steps in itertools.islice(schedule(), 3)]
    assert ticks == [
        [(0, "created")],
        [(1, "created"), (0, "acknowledged")],
        [(2, "created"), (1, "acknowledged"), (0, "resolved")],
    ]


async def test_signed_webhooks_go_through_the_verified_path(tmp_path):
    secret = new_secret()
    s = settings(
        tmp_path,
        http={"enabled": True, "port": 0},
        sources={"argus": {"type": "argus-webhook", "secrets": [secret]}},
        sinks={"file": {"type": "file"}},
        routes=[{"sinks": ["file"]}],
    )
    async with running_app(s) as (app, base):
        sender = ArgusSender(f"{base}/webhooks/argus", secret, interval=0.01, max_incidents=2)
        with anyio.fail_after(10):
            await sender.run()
        wrong = ArgusSender(f"{base}/webhooks/argus", new_secret(), interval=0.01, max_incidents=1)
        with anyio.fail_after(10):
            await wrong.run()
        assert app.journal.last_seq == 6
        await wait_until(lambda: app.journal.cursor("file") == 6)
    assert (sender.sent, sender.accepted, sender.rejected) == (6, 6, 0)
    assert (wrong.sent, wrong.accepted, wrong.rejected) == (3, 0, 3)
    lines = (tmp_path / "state" / "events.jsonl").read_text().splitlines()
    assert len(lines) == 6
