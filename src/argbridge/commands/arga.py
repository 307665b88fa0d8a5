"""``argbridge follow`` and ``argbridge start``: Arga commands that talk to the running
daemon's control API (they never need the Arga API key: the daemon has it).

- ``argbridge follow RUN_ID [--demo]`` → ``POST /control/follow``;
- ``argbridge follow --list`` → ``GET /control/follow``;
- ``argbridge start url-run --url URL [--prompt TEXT]`` and
  ``argbridge start pr-run --repo OWNER/REPO --branch BRANCH`` → ``POST /control/start/…``:
  the daemon calls ``POST /validate/url-run`` / ``pr-run`` itself, follows the SSE
  response and keeps following the run; the command prints the run id.

The daemon is found as :mod:`argbridge.commands.control_client` says: its control socket
from ``--config``, ``--state-dir`` or ``--socket``, or a TCP control listener with
``--daemon http://host:port`` (token from ``--token`` or ``$ARGBRIDGE_CONTROL_TOKEN``).
Exit codes: 0 ok, 1 refused/failed, 2 bad configuration or arguments, 3 daemon unreachable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from argbridge.commands import control_client

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def _daemon_args(p: argparse.ArgumentParser) -> None:
    # ``--url`` is the page to validate in ``start url-run``: the TCP control URL is --daemon.
    control_client.add_arguments(p, url_flag="--daemon")
    p.add_argument("--source", help="arga source name (needed when the daemon has several)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the daemon")


def register(sub: Any) -> None:
    p = sub.add_parser("follow", help="follow an Arga run through the running daemon")
    p.add_argument("run_id", nargs="?", help="validation run id (or demo run id with --demo)")
    p.add_argument("--demo", action="store_true", help="a demo-runner run (WebSocket)")
    p.add_argument("--list", action="store_true", help="list the runs the daemon follows")
    _daemon_args(p)
    p.add_argument("--url", dest="control_url", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_follow)

    s = sub.add_parser("start", help="start an Arga validation run and follow it")
    kinds = s.add_subparsers(dest="start_kind", required=True, metavar="KIND")
    u = kinds.add_parser("url-run", help="POST /validate/url-run")
    u.add_argument("--url", required=True, help="public http(s) URL to validate")
    u.add_argument("--prompt", help="what to test (omit: the server plans the run)")
    u.add_argument("--twin", action="append", dest="twins", help="digital twin (repeatable)")
    _daemon_args(u)
    u.set_defaults(func=cmd_start)
    r = kinds.add_parser("pr-run", help="POST /validate/pr-run")
    r.add_argument("--repo", required=True, help="owner/repo")
    r.add_argument("--branch", help="branch name (or --pr-url)")
    r.add_argument("--pr-url", help="pull request URL")
    r.add_argument("--context-notes", help="extra instructions")
    r.add_argument("--twin", action="append", dest="twins", help="digital twin (repeatable)")
    _daemon_args(r)
    r.set_defaults(func=cmd_start)


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    try:
        target = control_client.resolve(args)
    except control_client.TargetError as exc:
        print(f"argbridge: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    try:
        with target.client(args.timeout) as client:
            response = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        print(f"argbridge: {control_client.unreachable(target, exc)}", file=sys.stderr)
        raise SystemExit(EXIT_UNREACHABLE) from None
    try:
        data = response.json()
    except ValueError:
        data = {"detail": response.text[:300]}
    return response.status_code, data


def _fail(status: int, data: Any) -> int:
    detail = data.get("detail") or data.get("title") if isinstance(data, dict) else data
    print(f"argbridge: the daemon answered {status}: {detail}", file=sys.stderr)
    return EXIT_FAILED


def cmd_follow(args: argparse.Namespace) -> int:
    if args.list:
        status, data = _call(args, "GET", "/control/follow")
        if status != 200:
            return _fail(status, data)
        for run in data.get("runs", []):
            print(
                f"{run['source']}\t{run['kind']}\t{run['run_id']}\t{run['status']}\t{run['origin']}"
            )
        return 0
    if not args.run_id:
        print("argbridge follow: a RUN_ID is required (or --list)", file=sys.stderr)
        return EXIT_USAGE
    body: dict[str, Any] = {"run_id": args.run_id, "demo": args.demo}
    if args.source:
        body["source"] = args.source
    status, data = _call(args, "POST", "/control/follow", body)
    if status not in (200, 202):
        return _fail(status, data)
    what = "demo run" if args.demo else "validation run"
    verb = "now following" if data.get("new") else "already following"
    print(f"{data['source']}: {verb} {what} {data['run_id']} ({data['status']})")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    kind = args.start_kind
    body: dict[str, Any] = {}
    if kind == "url-run":
        body["url"] = args.url
        if args.prompt:
            body["prompt"] = args.prompt
    else:
        if not (args.branch or args.pr_url):
            print("argbridge start pr-run: --branch or --pr-url is required", file=sys.stderr)
            return EXIT_USAGE
        body["repo"] = args.repo
        for key in ("branch", "pr_url", "context_notes"):
            value = getattr(args, key)
            if value:
                body[key] = value
    if args.twins:
        body["twins"] = args.twins
    if args.source:
        body["source"] = args.source
    status, data = _call(args, "POST", f"/control/start/{kind}", body)
    if status != 202:
        return _fail(status, data)
    print(f"{data['source']}: started {kind} {data['run_id']}; following it")
    return 0
