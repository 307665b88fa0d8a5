"""Inbound webhook throughput: signed 1 KiB Argus webhooks/s and p50/p99 latency.

Each request is verified (Standard Webhooks HMAC) and committed to the journal (one
synced LevelDB write batch per group commit) before its 200, under the daemon's embedded
uvicorn. Beside it, in the same run, a bare raw-ASGI app answering 204 (after reading the
body) under the same uvicorn configuration, and a bare SQLite ascending write (WAL,
``synchronous=FULL``, 1 KiB rows, 64 per transaction) give the composite ceiling of
issue 15: 1 / (1/bare app + 1/bare SQLite write). Load: ``wrk`` on loopback with a
Lua script that computes nothing: it replays requests pre-signed with fresh timestamps
and unique ``webhook-id`` values (so nothing is deduplicated away).

Usage::

    .venv/bin/python bench/bench_webhooks.py [--duration 10] [--connections 64] [--runs 1]
        [--breakdown] [--stub-journal]

Needs ``wrk`` (Debian: ``apt-get install -y wrk``). Targets: ≥ 35 % of the composite
ceiling and p99 < 20 ms at 64 connections.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET = "whsec_" + base64.b64encode(b"bench-secret-0123456789abcdef!!").decode()
TARGET_RATIO = 0.35
TARGET_P99_MS = 20.0

LUA = r"""
local reqs = {}
local n = 0
local i = 0
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  local path, body_path, nthreads = args[1], args[2], tonumber(args[3])
  local fh = io.open(body_path, "rb"); local body = fh:read("*a"); fh:close()
  local line_no = 0
  for line in io.lines(path) do
    line_no = line_no + 1
    if (line_no % nthreads) == (tid - 1) then
      local id, ts, sig = line:match("^(%S+)\t(%S+)\t(%S+)$")
      n = n + 1
      reqs[n] = wrk.format("POST", "/webhooks/argus", {
        ["Content-Type"] = "application/json",
        ["webhook-id"] = id,
        ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig,
      }, body)
    end
  end
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end
"""

BARE_LUA = r"""
function init(args)
  local fh = io.open(args[2], "rb"); local body = fh:read("*a"); fh:close()
  req = wrk.format("POST", "/bare", {["Content-Type"] = "application/json"}, body)
end
function request() return req end
"""


def webhook_body(size: int = 1024) -> bytes:
    """An Argus ``incident.created`` webhook body of exactly ``size`` bytes."""
    import orjson

    body: dict[str, Any] = {
        "event": "incident.created",
        "incident": {
            "id": "INC-2287",
            "title": "Checkout p99 latency above SLO",
            "severity": "P1",
            "status": "open",
            "service_id": "svc-checkout",
            "team_id": "team-payments",
            "auto_classified": True,
            "classification_confidence": 0.92,
            "created_at": "2026-11-23T10:00:00Z",
        },
        "pad": "",
    }
    body["pad"] = "x" * (size - len(orjson.dumps(body)))
    raw = orjson.dumps(body)
    assert len(raw) == size
    return raw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the servers (run in child processes) ----------------------------------------------


def serve_bare(port: int) -> None:
    """A raw ASGI app answering 204 after reading the body, under the daemon's uvicorn."""
    import anyio

    from argbridge.http import embed

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        # Exactly the daemon's embedding (argbridge.http.embed), minus the daemon.
        async with embed.embedded(app, embed.bind("127.0.0.1", port), shutdown_timeout=1):
            print("READY", flush=True)
            await anyio.sleep_forever()

    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})


def serve_daemon(port: int, state: str, stub_journal: bool = False) -> None:
    """The real daemon with one argus-webhook source (journal only, no sinks).

    ``stub_journal``: the journal append is replaced by a no-op after startup, so the
    run shows what HTTP + verification + normalisation cost without the commit."""
    import anyio

    from argbridge.config.settings import load_settings
    from argbridge.logging import configure_logging
    from argbridge.runtime import App

    configure_logging("warning", "json")
    settings = load_settings(
        None,
        state_dir=state,
        http={"enabled": True, "host": "127.0.0.1", "port": port},
        sources={"argus": {"type": "argus-webhook", "secrets": [SECRET]}},
    )
    app = App(settings, handle_signals=True)
    if stub_journal:
        _stub_appends()
    profile = os.environ.get("BENCH_PROFILE")
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(app.run)
            await app.ready.wait()
            assert app.http is not None
            await app.http.started.wait()
            print("READY", flush=True)

    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    stats = app.journal.stats()
    print(
        f"STATS appended={stats.appended} duplicates={stats.duplicates} commits={stats.commits}",
        flush=True,
    )


def _stub_appends() -> Callable[[], None]:
    """Make the event log's appends no-ops (for every role built on it from now on: a
    source's view binds ``EventLog.append`` when the app starts its sources); returns
    the undo."""
    from argbridge.journal import AppendStatus
    from argbridge.journal.log import EventLog

    real = EventLog.append

    async def no_append(self: EventLog, event: Any, *, wait: bool = True) -> AppendStatus:
        return AppendStatus.APPENDED

    EventLog.append = no_append  # type: ignore[method-assign]

    def undo() -> None:
        EventLog.append = real  # type: ignore[method-assign]

    return undo


# -- in-process breakdown (no HTTP, no load generator) -------------------------------------


def pieces(number: int = 20000) -> None:
    """µs of each necessary piece of a webhook request, alone (min of 5 timeit runs), and
    the journal alone (64 concurrent appenders, CPU of all threads per event)."""
    import timeit

    import orjson

    from argbridge.http.asgi import Request, Router
    from argbridge.normalize.argus import incident_event
    from argbridge.signing import Verifier, sign_standard
    from argbridge.sources.webhook import _accepted

    body = webhook_body()
    ts = int(time.time())
    raw_headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/json"),
        (b"content-length", b"1024"),
        (b"webhook-id", b"msg_1"),
        (b"webhook-timestamp", str(ts).encode()),
        (b"webhook-signature", sign_standard(SECRET, "msg_1", ts, body).encode()),
    ]
    scope = {"type": "http", "method": "POST", "path": "/webhooks/argus", "headers": raw_headers}
    router = Router()

    async def handler(request: Request) -> Any:
        raise NotImplementedError

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    router.add("POST", "/webhooks/argus", handler)
    verifier = Verifier("standard-webhooks", [SECRET])
    headers = Request(scope, receive).headers
    payload = orjson.loads(body)
    event = incident_event("argus", payload, delivery_id="msg_1")
    cases: list[tuple[str, Any]] = [
        (
            "route + Request (headers dict)",
            lambda: (router.match("POST", "/webhooks/argus"), Request(scope, receive)),
        ),
        ("HMAC verify (standard-webhooks)", lambda: verifier.verify(headers, body, ts)),
        ("JSON parse (orjson, 1 KiB)", lambda: orjson.loads(body)),
        ("normalise (incident_event)", lambda: incident_event("argus", payload, delivery_id="m")),
        ("event JSON for the journal", event.to_json),
        ("200 JSON answer", lambda: _accepted(event, "accepted")),
    ]
    print("pieces alone (µs per request, min of 5 runs):")
    total = 0.0
    for label, fn in cases:
        best = min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6
        total += best
        print(f"  {label:34s} {best:6.2f}")
    print(f"  {'sum':34s} {total:6.2f}")
    journal_alone()


def journal_alone(count: int = 20000, concurrency: int = 64) -> None:
    """CPU per event of ``Journal.append`` alone, split by thread (loop vs SQLite worker)."""
    import threading

    import anyio
    import orjson

    from argbridge.journal import Journal
    from argbridge.normalize.argus import incident_event

    payload = orjson.loads(webhook_body())
    events = [incident_event("argus", payload, delivery_id=f"m{i}") for i in range(count)]

    def thread_cpu() -> dict[int, float]:
        out: dict[int, float] = {}
        ticks = os.sysconf("SC_CLK_TCK")
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
        return out

    async def main() -> None:
        state = tempfile.mkdtemp(prefix="argbridge-bench-")
        try:
            async with Journal(Path(state) / "journal.db", sinks=[]) as journal:
                loop_tid = threading.get_native_id()

                async def worker(k: int) -> None:
                    for event in events[k::concurrency]:
                        await journal.append(event)

                before, wall = thread_cpu(), time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for k in range(concurrency):
                        tg.start_soon(worker, k)
                after, wall = thread_cpu(), time.perf_counter() - wall
        finally:
            shutil.rmtree(state, ignore_errors=True)
        loop_cpu = after.get(loop_tid, 0.0) - before.get(loop_tid, 0.0)
        others = sum(after.values()) - sum(before.values()) - loop_cpu
        print(
            f"journal.append alone ({count} events, {concurrency} concurrent): "
            f"{count / wall:.0f} events/s, CPU {loop_cpu / count * 1e6:.1f} µs/event in the "
            f"event loop + {others / count * 1e6:.1f} µs/event in the SQLite thread"
        )

    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})


def breakdown(count: int = 20000, concurrency: int = 64) -> None:
    """µs per request of the webhook handler called as an ASGI app (no sockets), with the
    real journal and with the journal append replaced by a no-op: where the time goes."""
    import anyio

    from argbridge.config.settings import load_settings
    from argbridge.logging import configure_logging
    from argbridge.runtime import App
    from argbridge.signing import sign_standard

    configure_logging("warning", "json")
    body = webhook_body()

    async def one(with_journal: bool) -> tuple[float, float]:
        state = tempfile.mkdtemp(prefix="argbridge-bench-")
        settings = load_settings(
            None,
            state_dir=state,
            http={"enabled": True, "host": "127.0.0.1", "port": 0},
            sources={"argus": {"type": "argus-webhook", "secrets": [SECRET]}},
        )
        app = App(settings, handle_signals=False)
        undo = _stub_appends() if not with_journal else (lambda: None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(app.run)
            await app.ready.wait()
            assert app.http is not None
            await app.http.started.wait()
            router = app.http.router
            ts = int(time.time())
            scopes = []
            for i in range(count):
                msg_id = f"msg_{i}"
                headers = [
                    (b"host", b"bench"),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"webhook-id", msg_id.encode()),
                    (b"webhook-timestamp", str(ts).encode()),
                    (b"webhook-signature", sign_standard(SECRET, msg_id, ts, body).encode()),
                ]
                scopes.append(
                    {
                        "type": "http",
                        "method": "POST",
                        "path": "/webhooks/argus",
                        "headers": headers,
                        "query_string": b"",
                    }
                )
            statuses: set[int] = set()

            async def receive() -> MutableMapping[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.add(message["status"])

            async def worker(k: int) -> None:
                for sc in scopes[k::concurrency]:
                    await router(sc, receive, send)

            wall, cpu = time.perf_counter(), time.process_time()
            async with anyio.create_task_group() as workers:
                for k in range(concurrency):
                    workers.start_soon(worker, k)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            assert statuses == {200}, statuses
            app.request_shutdown()
        undo()
        shutil.rmtree(state, ignore_errors=True)
        return wall / count * 1e6, cpu / count * 1e6

    async def main() -> None:
        for label, with_journal in (
            ("handler, journal append stubbed", False),
            ("handler + journal commit", True),
        ):
            wall, cpu = await one(with_journal)
            print(f"  {label:34s} {wall:7.1f} µs/req wall  {cpu:7.1f} µs/req CPU")

    print(f"in-process breakdown: {count} signed webhooks, {concurrency} concurrent, no HTTP")
    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})


# -- the driver --------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: str
    peak_rss_mb: float
    cpu_s: float


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def parse_wrk(out: str) -> tuple[float, float, float, int, int, str]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return rps, p50, p99, total, int(non.group(1)) if non else 0, errors.group(1) if errors else ""


def start_server(args: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "READY" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS MiB, CPU seconds) of a live process."""
    hwm = 0.0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm, (int(fields[11]) + int(fields[12])) / ticks


def presign(path: Path, body: bytes, count: int) -> None:
    """``count`` lines of ``id<TAB>timestamp<TAB>signature`` signed just now."""
    from argbridge.signing import sign_standard

    ts = int(time.time())
    prefix = uuid.uuid4().hex[:12]
    with path.open("w") as fh:
        for i in range(count):
            msg_id = f"msg_{prefix}_{i}"
            fh.write(f"{msg_id}\t{ts}\t{sign_standard(SECRET, msg_id, ts, body)}\n")


def run_wrk(
    script: Path, port: int, args: argparse.Namespace, extra: list[str], duration: float
) -> str:
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{int(duration)}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
        "--",
        *extra,
    ]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def bench_one(kind: str, args: argparse.Namespace, tmp: Path, body_path: Path) -> Result:
    port = free_port()
    body = body_path.read_bytes()
    if kind == "bare":
        proc = start_server(["--serve", "bare", "--port", str(port)])
        script = tmp / "bare.lua"
        script.write_text(BARE_LUA)
        extra = ["-", str(body_path)]
    else:
        state = tmp / f"state-{port}"
        serve = "daemon" if kind == "daemon" else "daemon-stub"
        proc = start_server(["--serve", serve, "--port", str(port), "--state", str(state)])
        script = tmp / "signed.lua"
        script.write_text(LUA)
        # Unique ids (separate sets for warm-up and run) at well above the expected rate.
        warm_ids, ids = tmp / f"warm-{port}.tsv", tmp / f"ids-{port}.tsv"
        presign(warm_ids, body, int(args.warmup * args.max_rate) + 1)
        presign(ids, body, int(args.duration * args.max_rate))
        warm_extra = [str(warm_ids), str(body_path), str(args.threads)]
        extra = [str(ids), str(body_path), str(args.threads)]
    try:
        if args.warmup:
            run_wrk(script, port, args, extra if kind == "bare" else warm_extra, args.warmup)
        _, cpu_before = proc_stats(proc.pid)
        out = run_wrk(script, port, args, extra, args.duration)
        peak, cpu_after = proc_stats(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            tail, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            tail = ""
    if kind == "daemon":
        stats = re.search(r"STATS appended=(\d+) duplicates=(\d+) commits=(\d+)", tail or "")
        if stats:
            appended, commits = int(stats.group(1)), int(stats.group(3))
            print(
                f"    journal: appended {appended}, duplicates {stats.group(2)}, "
                f"{appended / max(1, commits):.1f} events per commit"
            )
    rps, p50, p99, total, non2xx, errors = parse_wrk(out)
    return Result(kind, rps, p50, p99, total, non2xx, errors, peak, cpu_after - cpu_before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--max-rate", type=float, default=15000, help="pre-signed ids per second of load"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the handler in-process (no HTTP)"
    )
    parser.add_argument(
        "--stub-journal",
        action="store_true",
        help="also run the daemon with the journal append stubbed (what the commit costs)",
    )
    parser.add_argument(
        "--serve", choices=["bare", "daemon", "daemon-stub"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "bare":
        serve_bare(args.port)
        return 0
    if args.serve in ("daemon", "daemon-stub"):
        serve_daemon(args.port, args.state, stub_journal=args.serve == "daemon-stub")
        return 0
    if args.breakdown:
        pieces()
        breakdown()
    if shutil.which("wrk") is None:
        print(
            "bench_webhooks needs wrk on PATH: apt-get update && apt-get install -y wrk",
            file=sys.stderr,
        )
        return 2
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="argbridge-bench-") as tmpdir:
        tmp = Path(tmpdir)
        body_path = tmp / "body.json"
        body_path.write_bytes(webhook_body())
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
            f"(warm-up {args.warmup:g}s), body {body_path.stat().st_size} B, {args.runs} run(s)"
        )
        sqlite_rates: list[float] = []
        # The same SQLite write as bench_journal's ceiling (this file also runs as a script).
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from bench.bench_journal import ceiling

        for i in range(args.runs):
            sqlite_rates.append(ceiling(tmp / f"ceiling-{i}.db", 20000, 64))
            print(f"  bare SQLite write {sqlite_rates[-1]:9.0f} rows/s (1 KiB, 64/transaction)")
            kinds = ("bare", "stub", "daemon") if args.stub_journal else ("bare", "daemon")
            for kind in kinds:
                result = bench_one(kind, args, tmp, body_path)
                results.append(result)
                per_req = result.cpu_s / max(1, result.requests) * 1e6
                print(
                    f"  {kind:6s} {result.rps:9.0f} req/s  {per_req:5.0f} µs CPU/req  "
                    f"p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms  non-2xx {result.non_2xx}  "
                    f"server CPU {result.cpu_s / args.duration:4.2f} cores  "
                    f"peak RSS {result.peak_rss_mb:.0f} MiB"
                    + (f"  socket errors: {result.errors}" if result.errors else "")
                )
    bare = sorted(r.rps for r in results if r.name == "bare")
    daemon = [r for r in results if r.name == "daemon"]
    bare_rps = bare[len(bare) // 2]
    d = sorted(daemon, key=lambda r: r.rps)[len(daemon) // 2]
    sqlite_rate = sorted(sqlite_rates)[len(sqlite_rates) // 2]
    composite = 1 / (1 / bare_rps + 1 / sqlite_rate)
    ratio = d.rps / composite
    ok = ratio >= TARGET_RATIO and d.p99_ms < TARGET_P99_MS and d.non_2xx == 0
    print(
        f"signed webhooks: {d.rps:.0f} req/s = {ratio:.0%} of the composite ceiling "
        f"({composite:.0f} = bare app {bare_rps:.0f} + bare SQLite write {sqlite_rate:.0f}), "
        f"{d.rps / bare_rps:.0%} of the bare app; "
        f"p50 {d.p50_ms:.2f} ms, p99 {d.p99_ms:.2f} ms "
        f"(targets: >= {TARGET_RATIO:.0%}, p99 < {TARGET_P99_MS:g} ms) -> "
        + ("MET" if ok else "NOT MET")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
