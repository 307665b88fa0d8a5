"""Arga normalisation: types, data.upstream, and ids shared by stream and gap-fill."""

from __future__ import annotations

from typing import Any

import pytest

from argbridge.errors import EventError
from argbridge.events import CloudEvent, ExtensionValue
from argbridge.journal.records import JournalRecord, encode_parts, encoded
from argbridge.normalize.arga import (
    auth_failed_event,
    demorun_event,
    demorun_from_run,
    demorun_parts,
    results_event,
    results_from_run,
    results_parts,
)

RUN = "run-1"


def test_results_types_and_upstream():
    ev = results_event(RUN, {"type": "step_started", "step_number": 1}, upstream_id="4")
    assert ev.type == "arga.validation.step_started"
    assert ev.data["upstream"] == {"type": "step_started", "step_number": 1}
    assert ev.partitionkey == RUN and ev.sequence == 1
    term = results_event(RUN, {"type": "run_failed", "status": "failed"}, prefix="x.")
    assert term.type == "x.arga.validation.run.failed"


def test_step_result_on_stream_and_in_results_json_share_the_id():
    streamed = results_event(
        RUN,
        {"type": "step_result", "step_number": 2, "status": "fail", "description": "d"},
        upstream_id="17",
    )
    run = {
        "id": RUN,
        "status": "failed",
        "results_json": [
            {"step_number": 1, "status": "pass", "description": "a"},
            {"step_number": 2, "status": "fail", "description": "d"},
        ],
    }
    filled = results_from_run(RUN, run)
    assert [e.type for e in filled] == [
        "arga.validation.step_result",
        "arga.validation.step_result",
        "arga.validation.run.failed",
    ]
    assert filled[1].id == streamed.id
    assert streamed.severity == "high"
    terminal = results_event(RUN, {"type": "run_failed", "status": "failed"}, upstream_id="99")
    assert filled[2].id == terminal.id


def test_results_json_without_step_numbers_uses_positions():
    filled = results_from_run(RUN, {"status": "running", "results_json": [{"status": "pass"}]})
    streamed = results_event(RUN, {"type": "step_result", "step_number": 1, "status": "pass"})
    assert [e.id for e in filled] == [streamed.id]


def test_other_events_use_the_sse_id_else_content():
    a = results_event(RUN, {"type": "progress", "pct": 10}, upstream_id="5")
    b = results_event(RUN, {"type": "progress", "pct": 10}, upstream_id="5")
    c = results_event(RUN, {"type": "progress", "pct": 10})
    assert a.id == b.id != c.id
    assert c.id == results_event(RUN, {"pct": 10, "type": "progress"}).id


def test_demorun_ws_and_events_json_share_ids():
    item = {
        "id": "e1",
        "type": "running",
        "message": "m",
        "details": {},
        "timestamp": "2026-04-29T12:00:00Z",
    }
    ws = demorun_event(RUN, {"type": "event", "event": item})
    done = demorun_event(RUN, {"type": "done", "status": "completed"})
    assert ws is not None and done is not None
    filled = demorun_from_run(RUN, {"status": "completed", "events_json": [item]})
    assert [e.id for e in filled] == [ws.id, done.id]
    assert ws.type == "arga.demorun.running" and done.type == "arga.demorun.done"
    assert filled[1].data["status"] == "completed"
    assert demorun_event(RUN, {"type": "frame", "png": "..."}) is None


def test_running_demo_run_has_no_done():
    assert demorun_from_run(RUN, {"status": "running", "events_json": []}) == []


def test_auth_failed_alert():
    ev = auth_failed_event("arga", RUN, "results", "HTTP 401", at=1_700_000_000.0)
    assert ev.type == "argbridge.source.auth_failed"
    assert ev.severity == "high" and ev.data["run_id"] == RUN
    assert "401" in ev.data["detail"]


def test_type_part_memo_is_bounded():
    """Issue 17: the memo of cleaned type parts (values come from upstream) is an LRU of
    bounded size."""
    from argbridge.normalize import arga as normalize_arga

    info = normalize_arga._clean_type.cache_info()
    assert info.maxsize is not None and info.maxsize <= 4096
    for n in range(info.maxsize + 100):
        normalize_arga._type_part(f"kind {n}", "x")
    assert normalize_arga._clean_type.cache_info().currsize <= info.maxsize


def assert_same_journal_bytes(
    event: CloudEvent, parts: tuple[str, dict[str, ExtensionValue], dict[str, Any]]
) -> None:
    """``parts`` (a ``*_parts`` normaliser's) journal exactly the bytes of ``event``, and
    those bytes read back as ``event``."""
    assert parts[0] == event.id
    item = encode_parts(*parts)
    assert item == encoded(event)
    stored = JournalRecord.stored(1, 0.0, item.body[: item.split], item.body[item.split :])
    assert stored.event == event


#: Results payloads of every shape the normaliser tells apart.
SHAPES: list[dict[str, object]] = [
    {"type": "step_started", "step_number": 1},
    {"type": "step_result", "step_number": 2, "status": "fail", "description": "d"},
    {"type": "step_result", "step": 3, "result": "pass", "name": "n", "details": {"a": 1}},
    {"status": "passed", "index": 0, "step_title": "t", "message": "m"},
    {"type": "progress", "seq": 9, "status": "running", "message": "x" * 300},
    {"type": "run_completed", "status": "completed", "timestamp": "2026-04-29T12:00:00Z"},
    {"type": "run_failed", "status": "failed", "time": "not a time"},
    {"type": "run_", "status": "error", "created_at": "2026-04-29T12:00:00.5+02:00"},
    {"type": "weird type / with spaces!", "step_number": True, "status": "error"},
    {"type": 42, "step_number": {"n": 1}, "status": None, "title": ""},
    {"type": "", "step": [1], "result": "failed", "unicode": "é✓"},
    {},
]


@pytest.mark.parametrize("payload", SHAPES)
@pytest.mark.parametrize("upstream_id", [None, "17"])
@pytest.mark.parametrize("prefix", ["", "acme."])
def test_results_parts_give_the_bytes_of_the_cloudevent(payload, upstream_id, prefix):
    """The results stream's hot path (no CloudEvent object) journals exactly the bytes
    the CloudEvent path would, and those bytes read back as a valid CloudEvent."""
    now = "2026-12-02T05:00:00.000Z"
    kwargs = {"upstream_id": upstream_id, "prefix": prefix, "now": now}
    event = results_event(RUN, payload, base_url="https://arga.example/", **kwargs)
    parts = results_parts(RUN, payload, base_url="https://arga.example/", **kwargs)
    assert_same_journal_bytes(event, parts)


def test_results_parts_refuse_what_the_cloudevent_would():
    with pytest.raises(EventError, match="subject"):
        results_parts("", {"type": "progress"})


#: Demo-runner messages of every shape the normaliser tells apart.
MESSAGES: list[dict[str, object]] = [
    {
        "type": "event",
        "event": {
            "id": "e-1",
            "type": "click",
            "message": "m",
            "timestamp": "2026-04-29T12:00:00Z",
        },
    },
    {"type": "event", "event": {"type": "odd type!", "details": {"n": 1}, "timestamp": "bad"}},
    {"type": "event", "event": {"id": 7, "message": "é✓"}},
    {"type": "done", "status": "failed", "message": "boom"},
    {"type": "done", "status": "completed"},
    {"type": "done"},
    {"type": "frame", "data": "..."},
    {"type": "event", "event": "not an object"},
    {},
]


@pytest.mark.parametrize("message", MESSAGES)
@pytest.mark.parametrize("prefix", ["", "acme."])
def test_demorun_parts_give_the_bytes_of_the_cloudevent(message, prefix):
    now = "2026-12-02T05:00:00.000Z"
    event = demorun_event(RUN, message, base_url="https://arga.example/", prefix=prefix, now=now)
    parts = demorun_parts(RUN, message, base_url="https://arga.example/", prefix=prefix, now=now)
    if event is None:
        assert parts is None
        return
    assert parts is not None
    assert_same_journal_bytes(event, parts)


def test_demorun_parts_refuse_what_the_cloudevent_would():
    with pytest.raises(EventError, match="subject"):
        demorun_parts("", {"type": "done"})
