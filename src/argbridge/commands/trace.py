"""``argbridge trace ID`` / ``argbridge trace --subject S``: where did my event go.

Asks the running daemon (``GET /control/trace``, :mod:`argbridge.http.control_trace`)
and prints, per event, when it was journaled, its type and source, and per sink whether
it was delivered, is pending, retrying (attempt, next due, last error), dead-lettered or
not routed there. The connection options are those of ``argbridge status``.

Exit codes: 0 found, 1 nothing matches what the journal keeps, 2 bad arguments or
config, 3 the daemon cannot be reached or refused the request.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import orjson

from argbridge.commands.ops import _check, _client, _connection_args, _run

EXIT_NOT_FOUND = 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "trace",
        help="show where an event (or every event of a run/incident) went, per sink",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("event_id", nargs="?", metavar="ID", help="a CloudEvent id")
    what.add_argument("--subject", "-s", help="every event of this run or incident")
    _connection_args(p)
    p.add_argument("--json", action="store_true", help="print the raw trace document")
    p.set_defaults(func=cmd_trace)


def cmd_trace(args: argparse.Namespace) -> int:
    return _run(args, _trace)


def _trace(args: argparse.Namespace) -> int:
    params = {"subject": args.subject} if args.subject else {"id": args.event_id}
    with _client(args) as client:
        response = client.get("/control/trace", params=params)
        if response.status_code == 404 and response.headers.get("content-type", "").startswith(
            "application/problem+json"
        ):
            detail = response.json().get("detail", "not found")
            print(f"argbridge trace: {detail}")
            return EXIT_NOT_FOUND
        _check(response, str(client.base_url))
        doc = response.json()
    if args.json:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_trace(doc))
    return 0


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _sink_line(state: dict[str, Any]) -> str:
    kind = state["state"]
    if kind == "retrying":
        return (
            f"retrying: attempt {state['attempt']}, next {_when(state['next_due'])}, "
            f"last error: {state.get('last_error') or '-'}"
        )
    if kind == "dead-lettered":
        return (
            f"dead-lettered (dlq id {state['dlid']}) at {_when(state['failed_at'])} after "
            f"{state['attempts']} attempt(s): {state['reason']}"
        )
    if kind == "pending":
        return f"pending ({state['behind']} event(s) behind the sink's cursor {state['cursor']})"
    return str(kind)


def render_trace(doc: dict[str, Any]) -> str:
    """The human-readable trace: one block per event, one line per sink."""
    lines: list[str] = []
    for ev in doc["events"]:
        lines.append(f"event {ev['id']}  seq {ev['seq']}")
        lines.append(f"  type     {ev['type']}")
        lines.append(f"  source   {ev['source']}")
        if ev.get("subject"):
            lines.append(f"  subject  {ev['subject']}")
        journaled = _when(ev["journaled_at"]) if ev["journaled_at"] else "(no longer retained)"
        lines.append(f"  journaled {journaled}")
        width = max((len(n) for n in ev["sinks"]), default=0)
        for name, state in ev["sinks"].items():
            lines.append(f"  sink {name.ljust(width)}  {_sink_line(state)}")
        lines.append("")
    tail = f"{len(doc['events'])} event(s); {doc['scanned']} retained event(s) scanned"
    if doc.get("truncated"):
        tail += " (truncated)"
    lines.append(tail)
    return "\n".join(lines)
