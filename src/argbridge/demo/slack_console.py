"""Slack rendered to the console: a local Slack-compatible incoming-webhook server.

``POST /services/...`` accepts what Slack's incoming webhooks accept (``text`` plus
Block Kit ``blocks``/``attachments``), answers ``200 ok`` like Slack does, and prints the
message as readable text. :func:`render_message` is pure (payload → lines): the header,
the colour bar (attachment colour → ``red``/``amber``/``green``/``blue``/``grey``), the
section text, the fields as ``Label: value`` pairs, the context line and link buttons.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from argbridge.delivery.slack_blocks import AMBER, BLUE, GREEN, GREY, RED
from argbridge.demo.console import Console
from argbridge.http.asgi import Request, Response, Router

PATH_PREFIX = "/services"
COLOUR_NAMES = {RED: "red", AMBER: "amber", GREEN: "green", BLUE: "blue", GREY: "grey"}
_EMOJI = re.compile(r":[a-z0-9_+-]+:\s*")
_LINK = re.compile(r"<([^|>]+)\|([^>]+)>")


def unmrkdwn(text: str) -> str:
    """Slack mrkdwn → plain text (links, bold markers, entities)."""
    text = _LINK.sub(r"\2 (\1)", text)
    text = text.replace("*", "")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def colour_name(value: Any) -> str:
    """A Slack attachment colour as a word (``good``/``warning``/``danger`` too)."""
    if not isinstance(value, str):
        return "none"
    named = {"good": "green", "warning": "amber", "danger": "red"}
    return COLOUR_NAMES.get(value.upper(), named.get(value.lower(), value))


@dataclass(frozen=True, slots=True)
class Rendered:
    """A Slack message as text: ``colour`` is a word, ``lines`` the body."""

    colour: str
    header: str
    lines: tuple[str, ...]


def _block_lines(block: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(header text if a header block, body lines)."""
    kind = block.get("type")
    if kind == "header":
        text = block.get("text")
        if isinstance(text, Mapping):
            return unmrkdwn(str(text.get("text", ""))), []
        return None, []
    lines: list[str] = []
    if kind == "section":
        text = block.get("text")
        if isinstance(text, Mapping) and text.get("text"):
            lines.extend(unmrkdwn(str(text["text"])).splitlines())
        fields = block.get("fields")
        if isinstance(fields, list):
            pairs = []
            for f in fields:
                if isinstance(f, Mapping):
                    label, _, value = unmrkdwn(str(f.get("text", ""))).partition("\n")
                    pairs.append(f"{label}: {value}" if value else label)
            if pairs:
                lines.append(" · ".join(pairs))
    elif kind == "context":
        elements = block.get("elements")
        if isinstance(elements, list):
            parts = [
                unmrkdwn(str(e.get("text", "")))
                for e in elements
                if isinstance(e, Mapping) and e.get("text")
            ]
            if parts:
                lines.append(" · ".join(parts))
    elif kind == "actions":
        elements = block.get("elements")
        if isinstance(elements, list):
            links = []
            for e in elements:
                if isinstance(e, Mapping) and e.get("url"):
                    button = e.get("text")
                    name = str(button.get("text")) if isinstance(button, Mapping) else "link"
                    links.append(f"{name}: {e['url']}")
            if links:
                lines.append("links: " + " · ".join(links))
    return None, lines


def render_message(payload: Mapping[str, Any]) -> Rendered:
    """The readable form of a Slack message payload."""
    header = ""
    lines: list[str] = []
    colour = "none"
    blocks: list[Any] = list(payload.get("blocks") or [])
    attachments = payload.get("attachments") or []
    for att in attachments:
        if isinstance(att, Mapping):
            if colour == "none":
                colour = colour_name(att.get("color"))
            blocks.extend(att.get("blocks") or [])
            if not att.get("blocks") and att.get("text"):
                lines.append(unmrkdwn(str(att["text"])))
    for block in blocks:
        if not isinstance(block, Mapping):
            continue
        head, body = _block_lines(block)
        if head and not header:
            header = head
        lines.extend(body)
    if not header:
        header = _EMOJI.sub("", unmrkdwn(str(payload.get("text") or "(no text)")))
    return Rendered(colour=colour, header=header.strip(), lines=tuple(lines))


def format_rendered(msg: Rendered, console: Console, width: int = 92) -> list[str]:
    """Lines for the terminal: a coloured bar (or ``[colour]`` without colour)."""
    bar = console.style("▌", msg.colour) if console.colour else f"[{msg.colour}]"
    out = [f"slack {bar} {console.style(msg.header, 'bold')}"]
    pad = " " * 6 + (console.style("▌", msg.colour) if console.colour else "  ")
    for line in msg.lines:
        for part in textwrap.wrap(line, width, subsequent_indent="  ") or [""]:
            out.append(f"{pad} {part}")
    return out


class SlackConsole:
    """A Slack-compatible incoming-webhook endpoint that prints what it receives."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.messages = 0
        self.bad = 0
        self.colours: dict[str, int] = {}
        self.router = Router()
        self.router.add("POST", PATH_PREFIX + "/{team}/{bot}/{token}", self.handle)

    async def handle(self, request: Request) -> Response:
        try:
            payload = orjson.loads(await request.body(1024 * 1024))
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
            self.bad += 1  # what Slack answers to a malformed message
            return Response(400, b"invalid_payload", content_type=b"text/plain; charset=utf-8")
        msg = render_message(payload)
        self.messages += 1
        self.colours[msg.colour] = self.colours.get(msg.colour, 0) + 1
        if not self.quiet:
            self.console.write(format_rendered(msg, self.console))
        return Response(200, b"ok", content_type=b"text/plain; charset=utf-8")
