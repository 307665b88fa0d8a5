"""The peer of issue 15: Benthos (the MIT-licensed core, ``github.com/redpanda-data/benthos/v4``)
on argbridge's own benchmark workloads, both tools measured in the same run.

- Signed webhooks: ``wrk`` replays the pre-signed 1 KiB Argus webhooks of
  bench_webhooks.py (its Lua script, fresh timestamps, unique ``webhook-id`` values) at
  the real daemon (verify, replay cache, journal commit before the 200) and at Benthos
  (``http_server`` input → Bloblang Standard Webhooks check → CloudEvents-shaped JSON →
  ``file`` output, one line per event; 200 after the file output acked, 401 with a JSON
  body for a bad signature or a stale timestamp). Then a few good, bad-signature and
  stale requests to each, counting the rejections: the check must really check.
  A Benthos ``http_server`` → ``file`` run with no check at all gives its floor.
- WebSocket: the Arga simulator of bench_arga.py serves a pre-published demo run of N
  ~500-byte events; argbridge's ``arga`` source follows it into the journal (in a child
  process, for its peak RSS); Benthos's ``websocket`` input → Bloblang → ``file``
  follows the same stream; its rate runs from its first written line to line N + 1 (the
  ``done`` message included, as argbridge journals it), the file polled with a deadline.

Durability differs and every figure says so: argbridge answers (or advances) only after
the event is in a synced journal write (fsync per group commit) and deduplicated;
Benthos's ``file`` output writes without fsync (an acknowledged event is in the page cache
only: a power loss can lose it) and this configuration keeps no replay cache. Bloblang
has no constant-time compare: the signature check is a plain string comparison.

The Benthos binary is built once by bench/peers/build-benthos.sh (Go >= 1.25.2 and the
Go module proxy; pinned by bench/peers/benthos/go.mod and go.sum) into .cache/benthos/.

Usage: ``.venv/bin/python -m bench.bench_peers [--duration 10] [--connections 64]
[--events 50000] [--repeat 1] [--only webhooks,websocket]`` (``make bench-peers``);
needs ``wrk`` for the webhook part.
"""

from __future__ import annotations

import argparse
import multiprocessing
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
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import yaml

from bench import bench_webhooks as wh
from bench.common import median

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "bench" / "peers" / "build-benthos.sh"
WEBHOOK_PATH = "/webhooks/argus"
TOLERANCE_S = 300  # Standard Webhooks' timestamp tolerance, as argbridge's default

# -- Benthos configurations (generated, so that the test can check them without Go) -------

# Standard Webhooks (https://www.standardwebhooks.com): HMAC-SHA256 over
# "{webhook-id}.{webhook-timestamp}.{body}" with the base64 key after "whsec_", compared
# with each space-separated "v1,<base64>" entry of webhook-signature. Headers arrive as
# metadata under Go's canonical keys. A rejected request gets its 401 body through
# sync_response and is then deleted (acknowledged, never written).
VERIFY = """\
let id = metadata("Webhook-Id").or("")
let ts = metadata("Webhook-Timestamp").or("")
let key = env("WEBHOOK_SECRET").trim_prefix("whsec_").decode("base64")
let signed_content = $id + "." + $ts + "." + content().string()
let expected = "v1," + $signed_content.hash("hmac_sha256", $key).encode("base64")
let age = timestamp_unix() - $ts.number().catch(0)
let fresh = $age <= TOLERANCE && $age >= -TOLERANCE
let signed = metadata("Webhook-Signature").or("").split(" ").contains($expected)
if $id == "" || $ts == "" {
  meta status = "400"
  meta reason = "missing webhook-id or webhook-timestamp"
} else if !$fresh {
  meta status = "401"
  meta reason = "webhook-timestamp outside the tolerance"
} else if !$signed {
  meta status = "401"
  meta reason = "no webhook-signature entry matches"
}
root = content()
""".replace("TOLERANCE", str(TOLERANCE_S))

REJECT = """\
root.type = "about:blank"
root.status = @status.number()
root.title = "webhook rejected"
root.detail = @reason
"""

INCIDENT_EVENT = """\
root.specversion = "1.0"
root.id = metadata("Webhook-Id")
root.source = "argus"
root.type = "argus." + this.event
root.subject = this.incident.id
root.time = metadata("Webhook-Timestamp").number().ts_format("2006-01-02T15:04:05Z07:00", "UTC")
root.datacontenttype = "application/json"
root.data = this
"""

BAD_BODY = """\
meta status = "400"
root = {"type": "about:blank", "status": 400, "title": "bad webhook body", "detail": error()}
"""

DEMO_EVENT = """\
root.specversion = "1.0"
root.id = this.event.id.or("RUN_ID-" + this.type)
root.source = "arga/demo-runner"
root.type = "arga.demo." + this.event.type.or(this.type)
root.subject = "RUN_ID"
root.time = this.event.timestamp.or(now())
root.datacontenttype = "application/json"
root.data = this.event.or(this)
"""


def _respond_and_drop(mapping: str) -> list[dict[str, Any]]:
    return [{"mapping": mapping}, {"sync_response": {}}, {"mapping": "root = deleted()"}]


def webhook_config(port: int, out_file: Path, *, verify: bool = True) -> dict[str, Any]:
    """Benthos: ``http_server`` on 127.0.0.1:``port`` → (Standard Webhooks check →
    CloudEvents-shaped JSON) → one line per event in ``out_file``. The secret comes from
    the ``WEBHOOK_SECRET`` environment variable, never from the file."""
    http_input: dict[str, Any] = {
        "address": f"127.0.0.1:{port}",
        "path": WEBHOOK_PATH,
        "allowed_verbs": ["POST"],
        "timeout": "5s",
    }
    processors: list[dict[str, Any]] = []
    if verify:
        http_input["sync_response"] = {
            "status": '${! @status.or("200") }',
            "headers": {"Content-Type": "application/problem+json"},
        }
        processors = [
            {"mapping": VERIFY},
            {"switch": [{"check": "@status != null", "processors": _respond_and_drop(REJECT)}]},
            {"mapping": INCIDENT_EVENT},
            {"switch": [{"check": "errored()", "processors": _respond_and_drop(BAD_BODY)}]},
        ]
    return {
        "http": {"enabled": False},
        "logger": {"level": "WARN"},
        "input": {"http_server": http_input},
        "pipeline": {"processors": processors},
        "output": {"file": {"path": str(out_file), "codec": "lines"}},
    }


def websocket_config(url: str, run_id: str, out_file: Path) -> dict[str, Any]:
    """Benthos: ``websocket`` input (one message per frame) → CloudEvents-shaped JSON →
    one line per message in ``out_file``."""
    return {
        "http": {"enabled": False},
        "logger": {"level": "WARN"},
        "input": {"websocket": {"url": url}},
        "pipeline": {"processors": [{"mapping": DEMO_EVENT.replace("RUN_ID", run_id)}]},
        "output": {"file": {"path": str(out_file), "codec": "lines"}},
    }


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, width=1000)


# -- the Benthos process -------------------------------------------------------------------


def benthos_binary() -> Path:
    """The pinned Benthos binary, built on first use by the build script."""
    out = subprocess.run(["sh", str(BUILD_SCRIPT)], check=False, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_peers: {BUILD_SCRIPT} failed (exit {out.returncode})")
    return Path(out.stdout.strip().splitlines()[-1])


def benthos_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0].split(":", 1)[1].strip()


class Benthos:
    """One Benthos process on a generated config; its stderr goes to a log file."""

    def __init__(self, binary: Path, config: dict[str, Any], tmp: Path, name: str) -> None:
        self.config_path = tmp / f"{name}.yaml"
        self.config_path.write_text(dump(config))
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("w")
        env = {**os.environ, "WEBHOOK_SECRET": wh.SECRET}
        self.proc = subprocess.Popen(
            [str(binary), "run", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_listening(self, port: int, deadline_s: float = 20) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"benthos exited: {self.log_path.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        raise SystemExit(f"benthos did not listen on {port} within {deadline_s} s")

    def stats(self) -> tuple[float, float]:
        """(peak RSS MiB, CPU seconds so far)."""
        return wh.proc_stats(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# -- webhooks ------------------------------------------------------------------------------


@dataclass
class WebhookFigures:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    cpu_us_per_req: float
    peak_rss_mib: float
    written: int | None  # lines in the output file (Benthos), journal appends (argbridge)
    rejections: dict[str, int]  # check → statuses seen


def line_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def rejection_check(port: int, body: bytes, count: int) -> dict[str, int]:
    """``count`` each of: a good signed request, a wrong signature (the right one for
    another body), a timestamp 10 minutes old, no signature header. Returns how many of
    each got the expected status (2xx for good, 4xx for the others), keyed by check."""
    import httpx

    from argbridge.signing import sign_standard

    now = int(time.time())
    prefix = uuid.uuid4().hex[:8]
    outcomes = {"good→2xx": 0, "bad signature→4xx": 0, "stale→4xx": 0, "unsigned→4xx": 0}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        for i in range(count):
            for check in outcomes:
                msg_id = f"chk_{prefix}_{check[:3]}_{i}"
                ts = now - 600 if check.startswith("stale") else now
                sig = sign_standard(wh.SECRET, msg_id, ts, body + b" " if "bad" in check else body)
                headers = {"content-type": "application/json", "webhook-id": msg_id}
                headers["webhook-timestamp"] = str(ts)
                if not check.startswith("unsigned"):
                    headers["webhook-signature"] = f"v1,{'A' * 43}= {sig}"
                status = client.post(WEBHOOK_PATH, content=body, headers=headers).status_code
                good = check.startswith("good")
                if (good and 200 <= status < 300) or (not good and 400 <= status < 500):
                    outcomes[check] += 1
    return outcomes


def rejections_counted(state: Path) -> int:
    """The daemon's count of rejected webhooks (``/metrics`` on its control socket; its
    log is throttled)."""
    import httpx

    from argbridge.config.settings import ControlConfig

    uds = httpx.HTTPTransport(uds=str(ControlConfig().socket_path(state)))
    with httpx.Client(transport=uds, trust_env=False) as client:
        text = client.get("http://control/metrics").raise_for_status().text
    name = "argbridge_component_discarded_events_total"
    pattern = name + r'\{[^}]*kind="source",reason="bad_signature"\} (\S+)$'
    return sum(int(float(v)) for v in re.findall("^" + pattern, text, re.M))


def wrk_phase(port: int, args: argparse.Namespace, tmp: Path, body_path: Path) -> str:
    """The same load as bench_webhooks: a warm-up, then the measured run (fresh ids)."""
    body = body_path.read_bytes()
    script = tmp / "signed.lua"
    script.write_text(wh.LUA)
    warm_ids, ids = tmp / f"warm-{port}.tsv", tmp / f"ids-{port}.tsv"
    wh.presign(warm_ids, body, int(args.warmup * args.max_rate) + 1)
    wh.presign(ids, body, int(args.duration * args.max_rate))
    if args.warmup:
        wh.run_wrk(
            script, port, args, [str(warm_ids), str(body_path), str(args.threads)], args.warmup
        )
    return str(ids)


def bench_argbridge_webhooks(
    args: argparse.Namespace, tmp: Path, body_path: Path
) -> WebhookFigures:
    port = wh.free_port()
    log_path = tmp / f"argbridge-{port}.log"
    state = tmp / f"state-{port}"
    serve = ["--serve", "daemon", "--port", str(port), "--state", str(state)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, wh.__file__, *serve],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    if "READY" not in proc.stdout.readline():
        proc.kill()
        raise SystemExit(f"argbridge did not start: {log_path.read_text()[-2000:]}")
    try:
        ids = wrk_phase(port, args, tmp, body_path)
        _, cpu0 = wh.proc_stats(proc.pid)
        out = wh.run_wrk(
            tmp / "signed.lua", port, args, [ids, str(body_path), str(args.threads)], args.duration
        )
        peak, cpu1 = wh.proc_stats(proc.pid)
        checks = rejection_check(port, body_path.read_bytes(), args.checks)
        checks["rejections counted"] = rejections_counted(state)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            tail, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            tail = ""
    appended = None
    for line in (tail or "").splitlines():
        if line.startswith("STATS appended="):
            appended = int(line.split()[1].split("=")[1])
    rps, p50, p99, total, non2xx, _ = wh.parse_wrk(out)
    cpu_us = (cpu1 - cpu0) / max(1, total) * 1e6
    return WebhookFigures("argbridge", rps, p50, p99, total, non2xx, cpu_us, peak, appended, checks)


def bench_benthos_webhooks(
    binary: Path, args: argparse.Namespace, tmp: Path, body_path: Path, *, verify: bool
) -> WebhookFigures:
    port = wh.free_port()
    name = "benthos-verify" if verify else "benthos-floor"
    out_file = tmp / f"{name}-{port}.jsonl"
    benthos = Benthos(binary, webhook_config(port, out_file, verify=verify), tmp, name)
    try:
        benthos.wait_listening(port)
        ids = wrk_phase(port, args, tmp, body_path)
        before = line_count(out_file)
        _, cpu0 = benthos.stats()
        out = wh.run_wrk(
            tmp / "signed.lua", port, args, [ids, str(body_path), str(args.threads)], args.duration
        )
        peak, cpu1 = benthos.stats()
        written = line_count(out_file) - before
        checks = rejection_check(port, body_path.read_bytes(), args.checks) if verify else {}
        after_checks = line_count(out_file)
    finally:
        benthos.stop()
    if verify:
        # Only the good requests of the check may have reached the file.
        checks["lines written by the check"] = after_checks - before - written
    rps, p50, p99, total, non2xx, _ = wh.parse_wrk(out)
    cpu_us = (cpu1 - cpu0) / max(1, total) * 1e6
    label = "benthos" if verify else "benthos, no check (floor)"
    return WebhookFigures(label, rps, p50, p99, total, non2xx, cpu_us, peak, written, checks)


def run_webhooks(binary: Path, args: argparse.Namespace) -> list[WebhookFigures]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench_peers needs wrk on PATH: apt-get update && apt-get install -y wrk")
    results: list[WebhookFigures] = []
    with tempfile.TemporaryDirectory(prefix="argbridge-peers-") as tmpdir:
        tmp = Path(tmpdir)
        body_path = tmp / "body.json"
        body_path.write_bytes(wh.webhook_body())
        for r in range(args.repeat):
            # Alternate the order so drift on a shared machine hits both.
            runs: list[Callable[[], WebhookFigures]] = [
                lambda: bench_argbridge_webhooks(args, tmp, body_path),
                lambda: bench_benthos_webhooks(binary, args, tmp, body_path, verify=True),
            ]
            if r % 2:
                runs.reverse()
            if args.floor:
                runs.append(
                    lambda: bench_benthos_webhooks(binary, args, tmp, body_path, verify=False)
                )
            for run in runs:
                result = run()
                results.append(result)
                print(f"  pass {r + 1}: {result.name}: {result.rps:,.0f} req/s", file=sys.stderr)
    return results


# -- WebSocket -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WsFigures:
    rate: float  # events/s
    peak_rss_mib: float
    cpu_us: float  # per event


def _argbridge_ws_child(q: Queue[WsFigures], base: str, run_id: str, events: int) -> None:
    """In a spawned child: argbridge's arga source following ``run_id`` into a journal;
    puts its events/s, this process's peak RSS and CPU per event (the follow, journal
    open and close included)."""
    import resource

    import anyio

    from bench.bench_arga import argbridge_rate
    from bench.common import as_the_daemon

    as_the_daemon()
    cpu = time.process_time()
    with tempfile.TemporaryDirectory(prefix="argbridge-peers-ws-") as tmp:
        rate = anyio.run(
            argbridge_rate,
            base,
            "demo",
            run_id,
            events,
            Path(tmp),
            backend_options={"use_uvloop": True},
        )
    cpu_us = (time.process_time() - cpu) / (events + 1) * 1e6
    q.put(WsFigures(rate, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, cpu_us))


def argbridge_ws(base: str, run_id: str, events: int) -> WsFigures:
    ctx = multiprocessing.get_context("spawn")
    q: Queue[WsFigures] = ctx.Queue()
    child = ctx.Process(target=_argbridge_ws_child, args=(q, base, run_id, events))
    child.start()
    try:
        return q.get(timeout=600)
    finally:
        child.join(30)


def benthos_ws(
    binary: Path, base: str, run_id: str, events: int, tmp: Path, deadline_s: float = 300
) -> WsFigures:
    """Events/s from the first written line to line ``events`` + 1, peak RSS and CPU per
    event over the same span, of Benthos following the demo run's WebSocket into a file."""
    from bench.bench_arga import TOKEN

    url = base.replace("http://", "ws://") + f"/demo-runner/runs/{run_id}/stream?token={TOKEN}"
    out_file = tmp / f"benthos-ws-{run_id}.jsonl"
    benthos = Benthos(binary, websocket_config(url, run_id, out_file), tmp, f"ws-{run_id}")
    want = events + 1  # the events and the done message, as argbridge journals them
    lines = 0
    first = last = cpu0 = 0.0
    try:
        deadline = time.monotonic() + deadline_s
        while not out_file.exists():
            if time.monotonic() > deadline or benthos.proc.poll() is not None:
                raise SystemExit(f"benthos wrote nothing: {benthos.log_path.read_text()[-2000:]}")
            time.sleep(0.001)
        with out_file.open("rb") as fh:
            while lines < want:
                chunk = fh.read(1 << 20)
                if chunk:
                    if not lines:
                        first = time.perf_counter()
                        cpu0 = benthos.stats()[1]
                    lines += chunk.count(b"\n")
                    last = time.perf_counter()
                    continue
                if time.monotonic() > deadline or benthos.proc.poll() is not None:
                    raise SystemExit(f"benthos stopped at {lines} of {want} lines")
                time.sleep(0.002)
        peak, cpu1 = benthos.stats()
    finally:
        benthos.stop()
    return WsFigures((want - 1) / (last - first), peak, (cpu1 - cpu0) / (want - 1) * 1e6)


def run_websocket(binary: Path, args: argparse.Namespace) -> dict[str, list[WsFigures]]:
    from bench.bench_arga import _serve

    ctx = multiprocessing.get_context("spawn")
    q: Queue[int] = ctx.Queue()
    server = ctx.Process(target=_serve, args=(q, args.events, 2 * args.repeat), daemon=True)
    server.start()
    out: dict[str, list[WsFigures]] = {"argbridge": [], "benthos": []}
    try:
        base = f"http://127.0.0.1:{q.get(timeout=120)}"
        with tempfile.TemporaryDirectory(prefix="argbridge-peers-") as tmpdir:
            for r in range(args.repeat):
                order = ["argbridge", "benthos"] if r % 2 == 0 else ["benthos", "argbridge"]
                for who in order:
                    if who == "argbridge":
                        result = argbridge_ws(base, f"ws-{2 * r}", args.events)
                    else:
                        run_id = f"ws-{2 * r + 1}"
                        result = benthos_ws(binary, base, run_id, args.events, Path(tmpdir))
                    out[who].append(result)
                    print(
                        f"  websocket pass {r + 1}: {who}: {result.rate:,.0f} events/s",
                        file=sys.stderr,
                    )
    finally:
        server.terminate()
        server.join(5)
    return out


# -- the report ----------------------------------------------------------------------------

DURABILITY = {
    "argbridge": "fsync before 2xx (journal group commit), dedupe",
    "benthos": "no fsync (page cache), no dedupe",
    "benthos, no check (floor)": "no fsync, no check",
}


def report_webhooks(results: list[WebhookFigures], args: argparse.Namespace) -> None:
    print(
        f"\nSigned webhooks (bench_webhooks' load): wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s, 1 KiB pre-signed Argus webhooks, {args.repeat} run(s), median"
    )
    print(
        f"  {'':26} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>10} "
        f"{'peak RSS':>9} {'non-2xx':>7}  durability"
    )
    names = list(dict.fromkeys(r.name for r in results))
    for name in names:
        rs = [r for r in results if r.name == name]
        mid = sorted(rs, key=lambda r: r.rps)[len(rs) // 2]
        print(
            f"  {name:26} {mid.rps:8,.0f} {mid.p50_ms:7.2f} {mid.p99_ms:7.2f} "
            f"{mid.cpu_us_per_req:10.0f} {max(r.peak_rss_mib for r in rs):6.0f} MiB "
            f"{mid.non_2xx:7d}  {DURABILITY[name]}"
        )
    by = {n: median([r.rps for r in results if r.name == n]) for n in names}
    if "benthos" in by:
        print(f"  argbridge / benthos: {by['argbridge'] / by['benthos']:.2f}x the request rate")
    for r in results:
        if r.written is None:
            written = ""
        elif r.name == "argbridge":
            written = f", {r.written:,} appended to the journal (warm-up and checks included)"
        else:
            written = f", {r.written:,} lines written"
        checks = ", ".join(f"{k} {v}" for k, v in r.rejections.items())
        print(
            f"  {r.name}: {r.rps:,.0f} req/s, p99 {r.p99_ms:.1f} ms, {r.requests:,} requests"
            f"{written}; {checks}"
        )
    print(
        f"  (each check: {args.checks} requests; 'lines written by the check' must equal it, "
        f"'rejections counted' be {3 * args.checks})"
    )


def report_websocket(out: dict[str, list[WsFigures]], args: argparse.Namespace) -> None:
    print(
        f"\nWebSocket (bench_arga's demo-runner stream): {args.events:,} events of ~500 B "
        f"+ done, {args.repeat} run(s), median"
    )
    print(f"  {'':26} {'events/s':>9} {'CPU µs/ev':>9} {'peak RSS':>9}  durability")
    labels = {
        "argbridge": ("argbridge → journal", "fsync per group commit, dedupe"),
        "benthos": ("benthos → file", "no fsync (page cache), no dedupe"),
    }
    for who, runs in out.items():
        label, durability = labels[who]
        print(
            f"  {label:26} {median([r.rate for r in runs]):9,.0f} "
            f"{median([r.cpu_us for r in runs]):9.1f} "
            f"{max(r.peak_rss_mib for r in runs):6.0f} MiB  {durability}"
        )
        each = ", ".join(f"{r.rate:,.0f}" for r in runs)
        print(f"  {'':26} runs: {each}")
    a = median([r.rate for r in out["argbridge"]])
    b = median([r.rate for r in out["benthos"]])
    print(f"  argbridge / benthos: {a / b:.2f}x the event rate")
    print(
        "  (no latency figure: both follow a pre-published stream as fast as they can; "
        "Benthos timed from its first written line, argbridge from its connect; argbridge's "
        "RSS and CPU are its source process's, Benthos's its process's)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-rate", type=float, default=30000, help="pre-signed ids per s")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--checks", type=int, default=25, help="requests per rejection check")
    parser.add_argument("--no-floor", dest="floor", action="store_false")
    parser.add_argument("--only", default="webhooks,websocket")
    args = parser.parse_args()
    binary = benthos_binary()
    print(f"Benthos {benthos_version(binary)} ({binary.relative_to(ROOT)}), same run as argbridge")
    print(f"   argv: {' '.join(sys.argv)}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"   {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}")
    only = set(args.only.split(","))
    if "webhooks" in only:
        report_webhooks(run_webhooks(binary, args), args)
    if "websocket" in only:
        report_websocket(run_websocket(binary, args), args)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
