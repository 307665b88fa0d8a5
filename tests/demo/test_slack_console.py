"""Slack rendered to the console: pure rendering, and the Slack-compatible endpoint."""

from __future__ import annotations

import io

import anyio
import httpx

from argbridge.delivery.slack_blocks import build_message
from argbridge.demo.console import Console
from argbridge.demo.slack_console import SlackConsole, format_rendered, render_message, unmrkdwn
from argbridge.http.embed import serve
from argbridge.normalize.argus import incident_event

BODY = {
    "event": "incident.created",
    "incident": {
        "id": "INC-2287",
        "title": "Payments <API> returning 500s & more",
        "severity": "P1",
        "status": "open",
        "service_id": "svc-payments",
    },
}


def test_renders_a_real_incident_message():
    event = incident_event("argus", BODY, delivery_id="msg_1")
    msg = render_message(build_message(event).payload())
    assert msg.header == "Incident created: Payments <API> returning 500s & more"
    assert msg.colour == "red"
    assert "Incident: INC-2287 · Status: open · Severity: P1 · Service: svc-payments" in msg.lines
    assert any(line.startswith("argus.incident.created · ") for line in msg.lines)
    assert any(line.startswith("links: Open incident: https://") for line in msg.lines)


def test_plain_text_message_and_named_colours():
    msg = render_message({"text": ":red_circle: *Deploy* <https://x.example|done> &amp; ok"})
    assert msg.header == "Deploy done (https://x.example) & ok" and msg.colour == "none"
    msg = render_message({"text": "t", "attachments": [{"color": "good", "text": "fine"}]})
    assert (msg.colour, msg.header, msg.lines) == ("green", "t", ("fine",))
    assert unmrkdwn("&lt;b&gt;") == "<b>"


def test_terminal_lines_plain_and_coloured():
    msg = render_message(build_message(incident_event("argus", BODY, delivery_id="x")).payload())
    plain = format_rendered(msg, Console(colour=False))
    assert plain[0].startswith("slack [red] Incident created")
    assert all("\x1b[" not in line for line in plain)
    assert all(len(line) <= 110 for line in plain)  # long lines wrap, nothing is cut
    joined = " ".join(plain)
    assert "svc-payments" in joined and "https://argus" in joined
    coloured = format_rendered(msg, Console(colour=True))
    assert "\x1b[31m" in coloured[0]


async def test_endpoint_answers_like_slack_and_prints():
    out = io.StringIO()
    slack = SlackConsole(Console(out, colour=False))
    payload = build_message(incident_event("argus", BODY, delivery_id="y")).payload()
    with anyio.fail_after(10):
        async with serve(slack.router) as base, httpx.AsyncClient(base_url=base) as client:
            r = await client.post("/services/T1/B1/secret", json=payload)
            assert (r.status_code, r.text) == (200, "ok")
            bad = await client.post("/services/T1/B1/secret", content=b"{nope")
            assert (bad.status_code, bad.text) == (400, "invalid_payload")
            empty = await client.post("/services/T1/B1/secret", json={"foo": 1})
            assert empty.status_code == 400
    assert slack.messages == 1 and slack.bad == 2 and slack.colours == {"red": 1}
    assert out.getvalue().startswith("slack [red] Incident created: Payments")
