"""Slack messages for CloudEvents: Block Kit per event type, kept within Slack's limits.

Pure: no I/O. :func:`build_message` turns an event into a :class:`SlackMessage`: a header
(what happened), a colour bar from severity or status (a legacy attachment holding the
blocks, because only attachments carry a colour), a section with the message, fields
for run/incident, status, severity, step, service…, a context line (source, time, id,
coalesced updates) and link buttons (run, incident, dashboard, artifacts). ``text`` is
the plain-text fallback for notifications.

Every piece of text is escaped for mrkdwn and truncated on a safe boundary (never inside
an ``&amp;`` entity) to Slack's limits: ≤ 50 blocks, header ≤ 150, section text ≤ 3000,
≤ 10 fields of ≤ 2000, context ≤ 10 elements, actions ≤ 25, button text ≤ 75, URL ≤ 3000,
and the total block text under the undocumented ``msg_blocks_too_long`` cap.
:func:`check_limits` verifies a built payload; the sink never sends one that fails it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from argbridge.errors import PermanentDeliveryError
from argbridge.events import CloudEvent

MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS = 25
MAX_BUTTON_TEXT = 75
MAX_URL = 3000
MAX_FALLBACK_TEXT = 3000
#: Slack rejects messages whose block text passes ~13.2k chars (``msg_blocks_too_long``).
MAX_TOTAL_TEXT = 12000

RED, AMBER, BLUE, GREEN, GREY = "#E01E5A", "#ECB22E", "#439FE0", "#2EB67D", "#A0A0A0"
SEVERITY_COLOURS = {
    "critical": RED,
    "high": RED,
    "medium": AMBER,
    "low": BLUE,
    "info": BLUE,
    # Argus incident priorities (the normaliser's ``severity`` extension is P1..P4).
    "p1": RED,
    "p2": RED,
    "p3": AMBER,
    "p4": BLUE,
}
_BAD = {
    "failed",
    "failure",
    "error",
    "errored",
    "cancelled",
    "canceled",
    "timeout",
    "timed_out",
    "rejected",
    "aborted",
    "expired",
}
_GOOD = {"completed", "complete", "passed", "success", "succeeded", "resolved", "closed", "ok"}
_WARN = {"acknowledged", "mitigated", "investigating", "identified", "monitoring", "warning"}
_EMOJI = {RED: ":red_circle:", AMBER: ":large_orange_circle:", GREEN: ":large_green_circle:"}
#: Event types always worth a message even during a subject's cooldown.
TERMINAL_SUFFIXES = (".done", ".resolved", ".closed", ".created")
_LINK_LABELS = {
    "run": "Open run",
    "incident": "Open incident",
    "dashboard": "Dashboard",
    "artifacts": "Artifacts",
    "logs": "Logs",
    "report": "Report",
}
#: Link labels of the generic sources' ``data.url`` by event type prefix.
_URL_LABELS = (
    ("argus.e2e.", "Open run"),
    ("argos.ci.build", "Open build"),
    ("argos.omni.", "Open in Omni"),
)


class SlackPayloadError(PermanentDeliveryError):
    """A payload that breaks Slack's limits (a bug: the builder must prevent it)."""


@dataclass(frozen=True, slots=True)
class SlackMessage:
    text: str
    blocks: tuple[dict[str, Any], ...]
    attachments: tuple[dict[str, Any], ...]

    def payload(self, channel: str | None = None, thread_ts: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "text": self.text,
            "blocks": list(self.blocks),
            "attachments": list(self.attachments),
            "unfurl_links": False,
        }
        if channel:
            body["channel"] = channel
        if thread_ts:
            body["thread_ts"] = thread_ts
        return body


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` for mrkdwn (Slack's only three control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clean(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    # Lone surrogates cannot be encoded as JSON; control characters garble messages.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return "".join(c if c >= " " or c in "\n\t" else " " for c in text)


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, ending in ``…`` when cut, never inside an entity."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return "…"[:limit]
    cut = text[: limit - 1]
    amp = cut.rfind("&", max(0, len(cut) - 5))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _mrkdwn(text: str, limit: int) -> str:
    return truncate(escape(_clean(text)), limit)


def is_terminal(event: CloudEvent) -> bool:
    """Run/incident endings and beginnings (never coalesced away)."""
    return ".run." in event.type or event.type.endswith(TERMINAL_SUFFIXES)


def _data(event: CloudEvent) -> Mapping[str, Any]:
    return event.data if isinstance(event.data, Mapping) else {}


def colour(event: CloudEvent) -> str:
    data = _data(event)
    severity = event.severity or data.get("severity")
    if isinstance(severity, str) and severity.lower() in SEVERITY_COLOURS:
        if _status_of(event) not in _GOOD:
            return SEVERITY_COLOURS[severity.lower()]
    status = _status_of(event)
    if status in _BAD:
        return RED
    if status in _GOOD:
        return GREEN
    if status in _WARN:
        return AMBER
    return GREY


def _status_of(event: CloudEvent) -> str:
    data = _data(event)
    failed = data.get("failed")
    if isinstance(failed, int) and not isinstance(failed, bool) and failed > 0:
        return "failed"  # an E2E run's ``complete`` with failed tests
    for value in (data.get("conclusion"), data.get("status"), data.get("action")):
        if isinstance(value, str) and value:
            return value.lower()
    last = event.type.rsplit(".", 1)[-1].lower()
    return last


def title(event: CloudEvent) -> str:
    """A short human headline for the event type."""
    data = _data(event)
    parts = event.type.split(".")
    name = data.get("title")
    if ".validation.run." in event.type or event.type.endswith(".validation.run"):
        return f"Validation run {parts[-1]}" + (f": {name}" if name else "")
    if event.type.endswith(".demorun.done"):
        return f"Demo run {data.get('status') or 'done'}"
    if ".incident." in event.type:
        return f"Incident {parts[-1]}" + (f": {name}" if name else "")
    generic = _generic_title(event, data)
    if generic:
        return generic
    if name:
        return str(name)
    return event.type


def _generic_title(event: CloudEvent, data: Mapping[str, Any]) -> str | None:
    """Headlines of the Argus E2E, Argos CI and Argos Omni profiles' events."""
    t = event.type
    if ".e2e." in t or t.startswith("argus.e2e"):
        kind = t.rsplit(".", 1)[-1]
        if kind == "complete":
            verdict = "failed" if _status_of(event) == "failed" else "passed"
            counts = ", ".join(
                f"{data[k]} {k}" for k in ("passed", "failed") if isinstance(data.get(k), int)
            )
            return f"E2E run {verdict}" + (f" ({counts})" if counts else "")
        if kind in ("state_update", "status"):
            test = data.get("current_test")
            return f"E2E run {data.get('status') or 'update'}" + (f": {test}" if test else "")
        if kind == "screenshot":
            return "E2E screenshot" + (f" (step {data['step']})" if data.get("step") else "")
        return f"E2E {kind}"
    if ".ci.build." in t or t.startswith("argos.ci.build"):
        number = data.get("number")
        what = f"CI build #{number}" if number is not None else "CI build"
        name = data.get("name")
        return f"{what} {_status_of(event)}" + (f": {name}" if name else "")
    if ".omni." in t:
        kind = "analysis" if ".omni.analysis" in t else "item"
        name = data.get("name")
        return f"Omni {kind} {_status_of(event)}" + (f": {name}" if name else "")
    return None


def _fields(event: CloudEvent) -> list[dict[str, Any]]:
    data = _data(event)
    pairs: list[tuple[str, Any]] = [
        ("Run", data.get("run_id") or data.get("run")),
        ("Incident", data.get("incident_id")),
        ("Status", data.get("status")),
        ("Severity", event.severity or data.get("severity")),
        ("Step", data.get("step")),
        ("Kind", data.get("kind")),
        ("Service", data.get("service")),
        ("Team", data.get("team")),
        ("Previous status", data.get("previous_status")),
        ("Passed", data.get("passed")),
        ("Failed", data.get("failed")),
        ("Duration", f"{data['duration_seconds']} s" if data.get("duration_seconds") else None),
        ("Branch", data.get("branch")),
        ("Commit", str(data["commit"])[:12] if data.get("commit") else None),
        (
            "Subject",
            None
            if data.get("run_id") or data.get("run") or data.get("incident_id")
            else event.subject,
        ),
    ]
    out = []
    for label, value in pairs:
        if value in (None, "", {}, []):
            continue
        text = f"*{label}*\n{_mrkdwn(str(value), MAX_FIELD_TEXT - len(label) - 4)}"
        out.append({"type": "mrkdwn", "text": text})
    return out[:MAX_FIELDS]


def _links(event: CloudEvent, dashboard_url: str | None) -> list[dict[str, Any]]:
    data = _data(event)
    urls: dict[str, Any] = {}
    raw = data.get("urls")
    if isinstance(raw, Mapping):
        urls.update(raw)
    for key in ("artifacts_url", "report_url", "logs_url"):
        if isinstance(data.get(key), str):
            urls.setdefault(key.removesuffix("_url"), data[key])
    url = data.get("url")
    if isinstance(url, str):
        label = next((lb for prefix, lb in _URL_LABELS if prefix in event.type), "Open")
        urls = {label: url, **urls}
    if dashboard_url:
        urls.setdefault("dashboard", dashboard_url)
    buttons: list[dict[str, Any]] = []
    for i, (key, url) in enumerate(urls.items()):
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            continue
        if len(url) > MAX_URL:
            continue
        label = _LINK_LABELS.get(str(key)) or (
            str(key) if " " in str(key) else str(key).replace("_", " ").capitalize()
        )
        buttons.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": truncate(_clean(label), MAX_BUTTON_TEXT)},
                "url": url,
                "action_id": f"link-{i}",
            }
        )
        if len(buttons) == MAX_ACTIONS:
            break
    return buttons


def build_message(
    event: CloudEvent, *, dashboard_url: str | None = None, coalesced: int = 0
) -> SlackMessage:
    """The Slack message for ``event`` (``coalesced``: earlier updates folded into it)."""
    data = _data(event)
    colour_ = colour(event)
    headline = truncate(_clean(title(event)), MAX_HEADER)
    blocks: list[dict[str, Any]] = []
    body_text = data.get("message") or data.get("details") or data.get("summary")
    if body_text not in (None, ""):
        if not isinstance(body_text, str):
            body_text = str(body_text)
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(body_text, 2000)}}
        )
    fields = _fields(event)
    if fields:
        blocks.append({"type": "section", "fields": fields})
    context: list[dict[str, Any]] = [
        {"type": "mrkdwn", "text": _mrkdwn(f"{event.type} · {event.source}", 300)},
    ]
    if event.time:
        context.append({"type": "mrkdwn", "text": _mrkdwn(event.time, 64)})
    context.append({"type": "mrkdwn", "text": _mrkdwn(f"id {event.id}", 120)})
    if coalesced:
        context.append(
            {"type": "mrkdwn", "text": f"+{coalesced} earlier update(s) coalesced (cooldown)"}
        )
    blocks.append({"type": "context", "elements": context[:MAX_CONTEXT_ELEMENTS]})
    buttons = _links(event, dashboard_url)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    fallback_parts = [_EMOJI.get(colour_, ""), headline]
    if isinstance(body_text, str) and body_text:
        fallback_parts.append("— " + _clean(body_text))
    fallback = truncate(escape(" ".join(p for p in fallback_parts if p)), MAX_FALLBACK_TEXT)
    header = {"type": "header", "text": {"type": "plain_text", "text": headline, "emoji": True}}
    message = SlackMessage(
        text=fallback,
        blocks=(header,),
        attachments=({"color": colour_, "blocks": blocks, "fallback": fallback},),
    )
    check_limits(message.payload())
    return message


def _block_texts(block: Mapping[str, Any]) -> list[str]:
    texts: list[str] = []
    text = block.get("text")
    if isinstance(text, Mapping) and isinstance(text.get("text"), str):
        texts.append(text["text"])
    for key in ("fields", "elements"):
        for element in block.get(key) or ():
            if isinstance(element, Mapping):
                inner = element.get("text")
                if isinstance(inner, str):
                    texts.append(inner)
                elif isinstance(inner, Mapping) and isinstance(inner.get("text"), str):
                    texts.append(inner["text"])
    return texts


def check_limits(payload: Mapping[str, Any]) -> None:
    """Raise :class:`SlackPayloadError` when ``payload`` breaks a Slack limit."""
    blocks: list[Mapping[str, Any]] = list(payload.get("blocks") or ())
    for att in payload.get("attachments") or ():
        blocks.extend(att.get("blocks") or ())
    problems: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks > {MAX_BLOCKS}")
    total = 0
    for i, block in enumerate(blocks):
        kind = block.get("type")
        texts = _block_texts(block)
        total += sum(len(t) for t in texts)
        if kind == "header" and texts and len(texts[0]) > MAX_HEADER:
            problems.append(f"block {i}: header text > {MAX_HEADER}")
        if kind == "section":
            text = block.get("text")
            if isinstance(text, Mapping) and len(text.get("text", "")) > MAX_SECTION_TEXT:
                problems.append(f"block {i}: section text > {MAX_SECTION_TEXT}")
            fields = block.get("fields") or ()
            if len(fields) > MAX_FIELDS:
                problems.append(f"block {i}: {len(fields)} fields > {MAX_FIELDS}")
            if any(len(f.get("text", "")) > MAX_FIELD_TEXT for f in fields):
                problems.append(f"block {i}: field text > {MAX_FIELD_TEXT}")
        if kind == "context" and len(block.get("elements") or ()) > MAX_CONTEXT_ELEMENTS:
            problems.append(f"block {i}: context elements > {MAX_CONTEXT_ELEMENTS}")
        if kind == "actions":
            elements = block.get("elements") or ()
            if len(elements) > MAX_ACTIONS:
                problems.append(f"block {i}: actions > {MAX_ACTIONS}")
            for el in elements:
                if len(el.get("url", "")) > MAX_URL:
                    problems.append(f"block {i}: url > {MAX_URL}")
                if len(el.get("text", {}).get("text", "")) > MAX_BUTTON_TEXT:
                    problems.append(f"block {i}: button text > {MAX_BUTTON_TEXT}")
    if total > MAX_TOTAL_TEXT:
        problems.append(f"total block text {total} > {MAX_TOTAL_TEXT}")
    if len(str(payload.get("text", ""))) > 4000:
        problems.append("fallback text > 4000")
    if problems:
        raise SlackPayloadError("invalid Slack payload: " + "; ".join(problems))
