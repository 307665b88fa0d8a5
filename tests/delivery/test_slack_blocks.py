from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from argbridge.delivery.slack_blocks import (
    AMBER,
    GREEN,
    MAX_HEADER,
    RED,
    SlackPayloadError,
    build_message,
    check_limits,
    colour,
    escape,
    is_terminal,
    truncate,
)
from argbridge.events import CloudEvent
from tests.support.receivers import validate_slack_payload


def run_failed(**data: Any) -> CloudEvent:
    body: dict[str, Any] = {
        "run_id": "r-1",
        "status": "failed",
        "title": "Checkout flow",
        "message": "Step 3 <payment> failed & retried",
        "urls": {"run": "https://arga.example/runs/r-1", "bogus": "javascript:alert(1)"},
    }
    body.update(data)
    return CloudEvent(
        id="e1",
        source="urn:arga",
        type="arga.validation.run.failed",
        subject="runs/r-1",
        time="2026-01-02T03:04:05.000Z",
        data=body,
    )


def incident(**kw: Any) -> CloudEvent:
    return CloudEvent(
        id="i1",
        source="urn:argus",
        type="argus.incident.resolved",
        subject="incidents/42",
        severity=kw.pop("severity", "critical"),
        data={"incident_id": 42, "action": "resolved", "status": "resolved", "title": "DB down"},
    )


def test_run_failed_message():
    msg = build_message(run_failed(), dashboard_url="https://dash.example")
    payload = msg.payload("#runs", "123.456")
    validate_slack_payload(payload)
    assert payload["channel"] == "#runs" and payload["thread_ts"] == "123.456"
    assert payload["blocks"][0]["type"] == "header"
    assert payload["blocks"][0]["text"]["text"] == "Validation run failed: Checkout flow"
    att = payload["attachments"][0]
    assert att["color"] == RED
    kinds = [b["type"] for b in att["blocks"]]
    assert kinds == ["section", "section", "context", "actions"]
    assert att["blocks"][0]["text"]["text"] == "Step 3 &lt;payment&gt; failed &amp; retried"
    fields = "\n".join(f["text"] for f in att["blocks"][1]["fields"])
    assert "*Run*\nr-1" in fields and "*Status*\nfailed" in fields
    urls = [e["url"] for e in att["blocks"][3]["elements"]]
    assert urls == ["https://arga.example/runs/r-1", "https://dash.example"]
    assert "Validation run failed" in msg.text


def test_resolved_incident_is_green_even_when_critical():
    ev = incident()
    assert colour(ev) == GREEN
    assert is_terminal(ev)
    payload = build_message(ev).payload()
    validate_slack_payload(payload)
    assert payload["blocks"][0]["text"]["text"] == "Incident resolved: DB down"


def test_truncate_never_cuts_an_entity():
    text = escape("a" * 10 + "&b")
    assert truncate(text, 13) == "a" * 10 + "…"
    assert truncate("abc", 3) == "abc"
    assert truncate("abcd", 3) == "ab…"


def test_check_limits_rejects_what_slack_would():
    with pytest.raises(SlackPayloadError, match="blocks"):
        check_limits({"text": "x", "blocks": [{"type": "divider"}] * 51})
    with pytest.raises(SlackPayloadError, match="header"):
        check_limits(
            {
                "text": "x",
                "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            }
        )


def test_coalesced_count_is_shown():
    payload = build_message(run_failed(), coalesced=4).payload()
    context = next(b for b in payload["attachments"][0]["blocks"] if b["type"] == "context")
    assert any("+4 earlier" in e["text"] for e in context["elements"])


_text = st.text(st.characters(codec="utf-8"), max_size=6000)


@settings(max_examples=60, deadline=None)
@given(
    title=_text,
    message=_text,
    status=_text,
    step=_text,
    urls=st.dictionaries(
        st.text(max_size=80), st.text(max_size=3100).map(lambda s: "https://x/" + s), max_size=40
    ),
)
def test_any_event_builds_a_valid_payload(title, message, status, step, urls):
    ev = run_failed(title=title, message=message, status=status, step=step, urls=urls)
    payload = build_message(ev, dashboard_url="https://d").payload("#c")
    validate_slack_payload(payload)
    assert len(payload["blocks"][0]["text"]["text"]) <= MAX_HEADER


@pytest.mark.parametrize(("severity", "expected"), [("P1", RED), ("p2", RED), ("P3", AMBER)])
def test_argus_priorities_colour_open_incidents(severity, expected):
    event = CloudEvent(
        id="i2",
        source="urn:argus",
        type="argus.incident.created",
        subject="INC-1",
        severity=severity,
        data={"incident_id": "INC-1", "action": "created", "status": "open"},
    )
    assert colour(event) == expected
    assert colour(incident(severity=severity)) == GREEN  # resolved stays green


# -- the generic sources' profiles (Argus E2E, Argos CI, Argos Omni) -----------------------


def _profile_event(profile: dict[str, Any], payload: dict[str, Any], event: str = "") -> CloudEvent:
    """An event built exactly as the profile's generic source builds it."""
    from argbridge.config.settings import load_settings
    from argbridge.normalize.stream import EventSpec, item_event, stream_event

    s = load_settings(None, sources={"p": profile})
    (cfg,) = s.sources["p"].expand("p").values()  # type: ignore[union-attr]
    link = cfg.link.replace("{run_id}", "run-1") if cfg.link else None
    spec = EventSpec("p", "https://x", cfg.ce_type, mapping=cfg.mapping.compile(), link=link)
    now = "2026-01-12T10:00:00Z"
    if cfg.type == "sse":
        ev, _ = stream_event(
            spec,
            payload,
            run="run-1",
            event=event,
            position=0,
            content=b"{}",
            upstream_id=None,
            now=now,
        )
        return ev
    ev, _ = item_event(spec, payload, item_id=payload["id"], marker="m", size=0, now=now)
    return ev


E2E = {"type": "argus-e2e", "api_key": "k", "run_id": "run-1"}
CI = {"type": "argos-ci", "token": "t"}


def test_failed_e2e_run_is_red_with_counts_and_its_link():
    ev = _profile_event(E2E, {"passed": 9, "failed": 1, "duration_seconds": 120}, "complete")
    assert colour(ev) == RED
    msg = build_message(ev)
    payload = msg.payload()
    validate_slack_payload(payload)
    assert payload["blocks"][0]["text"]["text"] == "E2E run failed (9 passed, 1 failed)"
    blocks = payload["attachments"][0]["blocks"]
    buttons = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert buttons[0]["text"]["text"] == "Open run"
    assert buttons[0]["url"] == "https://app.argus.io/runs/run-1"
    fields = next(b for b in blocks if b.get("fields"))["fields"]
    assert {"type": "mrkdwn", "text": "*Failed*\n1"} in fields
    assert msg.text.startswith(":red_circle: E2E run failed")


def test_passed_e2e_run_is_green_and_a_state_update_names_the_test():
    ev = _profile_event(E2E, {"passed": 10, "failed": 0}, "complete")
    assert colour(ev) == GREEN
    assert build_message(ev).payload()["blocks"][0]["text"]["text"] == (
        "E2E run passed (10 passed, 0 failed)"
    )
    upd = _profile_event(E2E, {"status": "running", "current_test": "login"}, "state_update")
    assert build_message(upd).payload()["blocks"][0]["text"]["text"] == "E2E run running: login"


def test_failed_ci_build_is_red_with_its_link():
    build = {
        "id": "b7",
        "number": 7,
        "name": "default",
        "status": "complete",
        "conclusion": "failure",
        "url": "https://app.argos-ci.com/acme/web/builds/7",
        "head": {"sha": "a" * 40, "branch": "main"},
    }
    ev = _profile_event(CI, build)
    assert ev.type == "argos.ci.build.failure" and colour(ev) == RED
    payload = build_message(ev).payload()
    validate_slack_payload(payload)
    assert payload["blocks"][0]["text"]["text"] == "CI build #7 failure: default"
    blocks = payload["attachments"][0]["blocks"]
    button = next(b for b in blocks if b["type"] == "actions")["elements"][0]
    assert (button["text"]["text"], button["url"]) == ("Open build", build["url"])
    ok = _profile_event(CI, {**build, "conclusion": "success"})
    assert colour(ok) == GREEN


def test_omni_analysis_headline():
    omni = {"type": "argos-omni", "api_key": "k", "workflow_id": "wf1", "include": ["analyses"]}
    ev = _profile_event(omni, {"id": "an1", "status": "rejected", "name": "passport.jpg"})
    assert colour(ev) == RED
    assert build_message(ev).payload()["blocks"][0]["text"]["text"] == (
        "Omni analysis rejected: passport.jpg"
    )
