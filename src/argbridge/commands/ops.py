"""``argbridge status`` and ``argbridge tail``: live views of a running daemon.

Both talk to the daemon's control API (:mod:`argbridge.http.control_ops`), found as
:mod:`argbridge.commands.control_client` says: the control socket from ``--config``,
``--state-dir`` or ``--socket`` (default ``./var/control.sock``), or a TCP control
listener with ``--url`` (and ``--token``).

Exit codes: 0 success (``status``: the daemon is ready), 1 the daemon is not ready, 2 bad
arguments or config, 3 the daemon cannot be reached or refused the request.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from argbridge.commands import control_client

EXIT_NOT_READY = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CommandError(Exception):
    """A failure to report on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.code = code


def register(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="show a running daemon's components, backlogs, open streams and last errors",
    )
    _connection_args(p)
    p.add_argument("--json", action="store_true", help="print the raw status document")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tail", help="print events as they are journaled")
    _connection_args(p)
    p.add_argument("--type", dest="type_prefix", metavar="PREFIX", help="CloudEvents type prefix")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--after", type=int, metavar="SEQ", help="start after this journal seq")
    p.add_argument(
        "-n",
        "--lines",
        type=int,
        default=10,
        metavar="N",
        help="without --after: start with the last N journaled events (default 10)",
    )
    p.add_argument("--count", type=int, metavar="N", help="exit after printing N events")
    p.add_argument("--json", action="store_true", help="print each event as a JSON line")
    p.set_defaults(func=cmd_tail)


def _connection_args(p: argparse.ArgumentParser) -> None:
    control_client.add_arguments(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")


def _client(args: argparse.Namespace, *, stream: bool = False) -> httpx.Client:
    try:
        target = control_client.resolve(args)
    except control_client.TargetError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    args.target = target
    timeout = httpx.Timeout(args.timeout, read=None if stream else args.timeout)
    return target.client(timeout)


def _where(args: argparse.Namespace) -> str:
    target = getattr(args, "target", None)
    return target.where if target is not None else "the daemon"


def _check(response: httpx.Response, base: str) -> None:
    if response.status_code == 401:
        raise CommandError(f"{base} refused the control token (401): pass --token (control.token)")
    if response.status_code == 403:
        raise CommandError(f"{base} refused the request (403): {_detail(response)}")
    if response.status_code == 404:
        raise CommandError(
            f"{base} has no control API here (404): the control API is on the daemon's "
            "control socket (--config, --state-dir) or control.port, not the webhook listener"
        )
    if response.status_code >= 400:
        raise CommandError(f"{base}: HTTP {response.status_code} {_detail(response)}".rstrip())


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", "")
    except ValueError:
        return ""
    return detail if isinstance(detail, str) else ""


def _run(args: argparse.Namespace, fn: Any) -> int:
    try:
        code: int = fn(args)
        return code
    except CommandError as exc:
        print(f"argbridge {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except httpx.TransportError as exc:
        target = getattr(args, "target", None)
        message = control_client.unreachable(target, exc) if target else str(exc)
        print(f"argbridge {args.command}: {message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # `argbridge tail | head`: the reader left; exit quietly.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


# -- status -----------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    return _run(args, _status)


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.get("/control/status")
        _check(response, _where(args))
        doc = response.json()
        if args.json:
            print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        else:
            print(render_status(doc, _where(args)))
    return 0 if doc.get("ready") else EXIT_NOT_READY


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return out


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_config(cfg: dict[str, Any]) -> str:
    """``config: PATH sha256 HASH loaded at T`` plus the last reload's outcome."""
    line = (
        f"config: {cfg.get('path') or '-'} sha256 {(cfg.get('sha256') or '-')[:16]} "
        f"loaded at {_utc(cfg['loaded_at'])}, {cfg.get('reloads', 0)} reload(s)"
    )
    last = cfg.get("last_reload")
    if last and not last.get("ok"):
        errors = last.get("errors") or []
        line += (
            f"; LAST RELOAD REJECTED at {_utc(last['at'])} ({len(errors)} error(s): "
            f"{'; '.join(errors)[:200]}), running the config loaded before"
        )
    return line


def render_cluster(c: dict[str, Any]) -> list[str]:
    """Cluster mode's lines of ``argbridge status``."""
    lines = [
        f"cluster: instance {c['instance_id']}, group {c['group']}, partitions "
        f"{','.join(map(str, c['partitions'])) or '-'}, rebalances {c['rebalances']}, "
        f"owned runs {len(c['owned'])}"
        + (", CUT OFF (membership lapsed: streams stopped)" if c.get("cut_off") else "")
    ]
    view = c.get("cluster")
    if view is None:
        lines.append(f"  cluster view unavailable: {c.get('cluster_error', '?')}")
        return lines
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(view["statuses"].items())) or "none"
    lines.append(f"  members: {', '.join(view['members']) or '-'} ({view['group_state']})")
    lines.append(f"  runs: {view['runs']} ({statuses})")
    for owner, runs in view["following_by_owner"].items():
        shown = ", ".join(k.split("/", 2)[2] for k in runs["runs"][:10])  # stream/id
        more = f" (+{runs['count'] - 10})" if runs["count"] > 10 else ""
        lines.append(f"  {owner} follows {runs['count']}: {shown}{more}")
    return lines


def render_status(doc: dict[str, Any], base: str) -> str:
    """The human-readable ``argbridge status`` report."""
    state = "ready" if doc.get("ready") else "NOT READY (" + ", ".join(doc["not_ready"]) + ")"
    if doc.get("stopping"):
        state += ", stopping"
    j = doc["journal"]
    lines = [
        f"argbridge {doc.get('version', '?')} ({doc.get('instance', '?')}) at {base}: {state}",
        f"journal: last seq {j['last_seq']}, undelivered {_size(j['backlog_bytes'])}, "
        f"sources paused: {'YES (backpressure)' if j['paused'] else 'no'}, "
        f"open streams: {doc['open_streams']}, dead letters: {doc['dead_letters']}",
    ]
    if doc.get("config"):
        lines.append(render_config(doc["config"]))
    if doc.get("cluster"):
        lines += render_cluster(doc["cluster"])
    lines.append("")
    sink_rows = [
        [
            name,
            s["type"] + (" (internal)" if s.get("internal") else ""),
            "ready" if s["ready"] else ("starting" if not s["started"] else "not ready"),
            str(s["backlog"]),
            str(s["in_flight"]),
            str(s["sent"]),
            str(s["errors"]),
            str(s["dead_letters"]),
            str(s["retries_pending"]),
            (s["last_error"] or "-")[:80],
        ]
        for name, s in doc["sinks"].items()
    ]
    lines += _table(
        [
            "SINK",
            "TYPE",
            "STATE",
            "BACKLOG",
            "IN-FLIGHT",
            "SENT",
            "ERRORS",
            "DEAD",
            "RETRIES",
            "LAST ERROR",
        ],
        sink_rows,
    )
    lines.append("")
    source_rows = [
        [
            name,
            s["type"],
            "ready" if s["ready"] else "not ready",
            str(s["open_streams"]),
            str(s["received"]),
            str(s["reconnects"]),
            str(s["errors"]),
            (s["detail"] or "-")[:60],
        ]
        for name, s in doc["sources"].items()
    ]
    lines += _table(
        ["SOURCE", "TYPE", "STATE", "STREAMS", "RECEIVED", "RECONNECTS", "ERRORS", "DETAIL"],
        source_rows,
    )
    return "\n".join(lines)


# -- tail -------------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    return _run(args, _tail)


def _tail(args: argparse.Namespace) -> int:
    if args.lines < 0 or (args.count is not None and args.count <= 0):
        raise CommandError("-n must be >= 0 and --count > 0", EXIT_USAGE)
    params: dict[str, str] = {"n": str(args.lines)}
    if args.type_prefix:
        params["type"] = args.type_prefix
    if args.after is not None:
        params["after"] = str(args.after)
    if args.follow:
        params["follow"] = "1"
    if args.count is not None:
        params["limit"] = str(args.count)
    with _client(args, stream=args.follow) as client:
        with client.stream("GET", "/control/tail", params=params) as response:
            if response.status_code >= 400:
                response.read()
                _check(response, _where(args))
            for item in _items(response.iter_lines()):
                print(format_item(item, as_json=args.json), flush=True)
    return 0


def _items(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            item: dict[str, Any] = orjson.loads(line)
            yield item


def format_item(item: dict[str, Any], *, as_json: bool = False) -> str:
    """One ``tail`` line: ``seq  time  type  subject  id`` (or the event's JSON)."""
    event = item["event"]
    if as_json:
        return orjson.dumps(event).decode()
    when = datetime.fromtimestamp(item["appended_at"], UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    when = when[:-4] + "Z"  # milliseconds
    subject = event.get("subject") or "-"
    return f"{item['seq']:>8}  {when}  {event['type']:<40}  {subject}  {event['id']}"
