"""``argbridge dlq list|replay`` and ``argbridge replay``: clients of the control API.

They talk to the running daemon's control API, found as
:mod:`argbridge.commands.control_client` says (the control socket from ``--config``,
``--state-dir`` or ``--socket``; a TCP control listener with ``--url`` and ``--token``).
Replays
show progress until the sink has caught up (``--no-wait`` returns at once).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from argbridge.commands import control_client
from argbridge.delivery.timespec import parse_since

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3


class ControlError(Exception):
    pass


class ControlClient:
    def __init__(self, target: control_client.Target, timeout: float = 10.0) -> None:
        self.target = target
        self.base = target.where
        try:
            self.http = target.client(timeout)
        except httpx.HTTPError as exc:
            raise ControlError(control_client.unreachable(target, exc)) from None

    def __repr__(self) -> str:
        return f"ControlClient({self.base!r})"

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ControlError(control_client.unreachable(self.target, exc)) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.json().get("title")
            except ValueError:
                detail = response.text[:200]
            raise ControlError(f"HTTP {response.status_code}: {detail}")
        return response.json()

    def close(self) -> None:
        self.http.close()


def _client(args: argparse.Namespace) -> ControlClient:
    try:
        return ControlClient(control_client.resolve(args))
    except control_client.TargetError as exc:
        raise ValueError(str(exc)) from None


def _fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_list(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        params = {"limit": str(args.limit)}
        if args.sink:
            params["sink"] = args.sink
        result = client.call("GET", "/control/dlq", params=params)
    finally:
        client.close()
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    items = result["items"]
    if not items:
        print("no dead letters" + (f" for sink {args.sink}" if args.sink else ""))
        return 0
    print(f"{'ID':>6}  {'SINK':<12} {'FAILED AT':<20} {'TRIES':>5}  {'TYPE':<32} REASON")
    for d in items:
        print(
            f"{d['id']:>6}  {d['sink']:<12} {_fmt_time(d['failed_at']):<20} {d['attempts']:>5}  "
            f"{d['type'][:32]:<32} {d['reason'][:80]}"
        )
    shown = len(items)
    print(f"{shown} of {result['total']} dead letter(s)")
    return 0


def _wait(client: ControlClient, sinks: list[str], done: Any, label: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        states = {s: client.call("GET", f"/control/sinks/{s}/progress") for s in sinks}
        line, finished = done(states)
        if line != last:
            print(f"{label}: {line}", flush=True)
            last = line
        if finished:
            return 0
        if time.monotonic() > deadline:
            print(f"{label}: still running after {timeout:.0f}s; it continues in the daemon")
            return EXIT_FAILED
        time.sleep(0.2)


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    if not (args.sink or args.id or args.since or args.all):
        print("dlq replay: choose what to replay (--sink, --id, --since) or --all", file=sys.stderr)
        return 2
    body: dict[str, Any] = {}
    if args.sink:
        body["sink"] = args.sink
    if args.id:
        body["ids"] = args.id
    if args.since:
        body["since"] = parse_since(args.since, time.time())
    client = _client(args)
    try:
        result = client.call("POST", "/control/dlq/replay", json=body)
        n = result["requeued"]
        print(f"requeued {n} dead letter(s) to {', '.join(result['sinks'])}")
        if n == 0 or args.no_wait:
            return 0

        def done(states: dict[str, Any]) -> tuple[str, bool]:
            pending = sum(s["retries"] for s in states.values())
            dead = sum(s["dead_letters"] for s in states.values())
            return f"{n - pending}/{n} attempted, {pending} pending, {dead} dead letter(s)", (
                pending == 0
            )

        return _wait(client, result["sinks"], done, "dlq replay", args.timeout)
    finally:
        client.close()


def cmd_replay(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        since = parse_since(args.since, time.time())
        result = client.call("POST", "/control/replay", json={"sink": args.sink, "since": since})
        total, first, last = result["events"], result["from_seq"], result["to_seq"]
        print(f"replaying {total} event(s) (seq {first}..{last}) to {args.sink}")
        if args.no_wait:
            return 0

        def done(states: dict[str, Any]) -> tuple[str, bool]:
            cursor = states[args.sink]["cursor"]
            sent = max(0, min(total, cursor - first + 1))
            pct = 100 * sent // total if total else 100
            return f"{sent}/{total} ({pct}%)", cursor >= last

        return _wait(client, [args.sink], done, "replay", args.timeout)
    finally:
        client.close()


def _run(fn: Any) -> Any:
    def runner(args: argparse.Namespace) -> int:
        try:
            code: int = fn(args)
        except ControlError as exc:
            print(f"argbridge {args.command}: {exc}", file=sys.stderr)
            unreachable = "cannot reach" in str(exc) or "cannot connect" in str(exc)
            return EXIT_UNREACHABLE if unreachable else EXIT_FAILED
        except ValueError as exc:
            print(f"argbridge {args.command}: {exc}", file=sys.stderr)
            return 2
        return code

    return runner


def _common(p: argparse.ArgumentParser) -> None:
    control_client.add_arguments(p)


def register(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="list or replay dead letters")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    p = dsub.add_parser("list", help="list dead letters")
    _common(p)
    p.add_argument("--sink", help="only this sink")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run(cmd_list))
    p = dsub.add_parser("replay", help="send dead letters again")
    _common(p)
    p.add_argument("--sink", help="only this sink")
    p.add_argument("--id", type=int, action="append", help="dead-letter id (repeatable)")
    p.add_argument("--since", help="failed at or after: RFC 3339, Unix seconds, or 2h (ago)")
    p.add_argument("--all", action="store_true", help="every dead letter of every sink")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the outcome")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=_run(cmd_dlq_replay))
    p = sub.add_parser("replay", help="re-deliver journaled events to a sink")
    _common(p)
    p.add_argument("--sink", required=True, help="sink to re-deliver to")
    p.add_argument("--since", required=True, help="RFC 3339, Unix seconds, or 2h (ago)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the sink")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=_run(cmd_replay))
