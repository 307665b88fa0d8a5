"""The real daemon as a subprocess: SIGKILL mid-stream loses nothing; SIGTERM drains, exit 0.

Waiting is event-driven: the test reads the daemon's JSON log lines from its stderr
(``replay.event``, ``replay.finished``, ``sink.caught_up``) instead of sleeping.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import orjson
import pytest

from argbridge.journal import inspect
from tests.support.process import Daemon

pytestmark = pytest.mark.slow

BATCH = 50
PASSES = 150  # 14 sample items per pass -> 2,100 events


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "argbridge.toml"
    config.write_text(
        f"""
state_dir = "{tmp_path / "state"}"
[log]
level = "debug"
format = "json"
[http]
enabled = false
[runtime]
drain_timeout = "10s"
[sources.sample]
type = "replay"
interval = 0
loop = true
max_passes = {PASSES}
[sinks.file]
type = "file"
path = "events.jsonl"
batch_size = {BATCH}
"""
    )
    return config


def journal_state(db: Path) -> tuple[list[str], int, int]:
    """(ids in seq order, last seq, the file sink's cursor); while the daemon runs too
    (through a consistent snapshot copy)."""
    with inspect.open_for_reading(db) as conn:
        rows = list(inspect.events(conn))
        cursor = inspect.stats(conn)["cursors"]["file"]
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1)), "seqs must be dense"
    return [str(attrs["id"]) for _, attrs in rows], len(rows), cursor


@pytest.mark.parametrize("kill_after", [30, 400, 1500])
def test_sigkill_mid_stream_then_restart_delivers_every_committed_event(
    tmp_path: Path, kill_after: int
):
    config = write_config(tmp_path)
    db = tmp_path / "state" / "journal"
    out = tmp_path / "state" / "events.jsonl"

    first = Daemon(config)
    try:
        first.wait_for(lambda _: first.count("replay.event") >= kill_after)
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)
    assert first.proc.returncode == -signal.SIGKILL
    committed_before_kill, _, _ = journal_state(db)
    assert 0 < len(committed_before_kill) < PASSES * 14, "the kill must land mid-stream"

    second = Daemon(config)
    try:
        second.wait_for(lambda line: line.get("event") == "replay.finished", timeout=120)
        _, last, cursor = journal_state(db)
        if cursor < last:
            second.wait_for(
                lambda line: line.get("event") == "sink.caught_up" and line["cursor"] >= last,
                timeout=60,
            )
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(timeout=30) == 0
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
    second.wait_for(lambda line: line.get("event") == "daemon.stopped", timeout=10)

    ids, last, cursor = journal_state(db)
    assert cursor == last == len(ids) == PASSES * 14
    assert set(committed_before_kill) <= set(ids)
    delivered = [orjson.loads(x)["id"] for x in out.read_bytes().splitlines()]
    counts = Counter(delivered)
    duplicates = sum(n - 1 for n in counts.values())
    # Every committed event reached the sink; only the batch in flight at the kill repeats.
    assert set(delivered) == set(ids)
    assert duplicates <= BATCH, f"{duplicates} duplicates > one in-flight batch ({BATCH})"
    print(f"\nkill at {len(committed_before_kill)} committed events; {duplicates} duplicate(s)")


def test_sigterm_drains_and_exits_zero(tmp_path: Path):
    config = write_config(tmp_path)
    daemon = Daemon(config)
    try:
        daemon.wait_for(lambda line: line.get("event") == "daemon.ready")
        daemon.wait_for(lambda _: daemon.count("replay.event") >= 50)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    daemon.wait_for(lambda line: line.get("event") == "daemon.stopped", timeout=10)
    events = [line.get("event") for line in daemon.seen]
    assert events.index("signal.received") < events.index("shutdown.draining")
    assert "shutdown.drain_timeout" not in events
    _, last, cursor = journal_state(tmp_path / "state" / "journal")
    assert cursor <= last
