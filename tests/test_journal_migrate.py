"""A v1 (SQLite) journal is migrated to format 2 on first start; a crash during the
migration leaves the v1 file usable, and the v1 file is kept for a rollback."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from argbridge.events import CloudEvent
from argbridge.journal import AppendStatus, Journal, migrate
from argbridge.runtime import App
from tests.conftest import make_event, settings
from tests.support.journal_v1 import write_v1
from tests.test_journal import FakeClock


def v1_journal(state: Path, n: int = 10) -> list[CloudEvent]:
    state.mkdir(parents=True, exist_ok=True)
    events = [make_event(i, size=50) for i in range(n)]
    events.append(make_event(n).with_changes(data=None))  # an event without data
    write_v1(
        state / "journal.db",
        events,
        first_seq=5,  # seqs 1..4 were deleted by retention: two are still tombstones
        tombstones=[(make_event(-1).id, 900.0), (make_event(-2).id, 950.0)],
        cursors={"a": 7, "b": 4},
        retries=[("a", 6, events[1], 2, 1_500.0, "HTTP 503")],
        dead_letters=[("b", 5, events[0], "gave up", 8, 1_200.0)],
        state={"sse:last_id:r1": "42"},
    )
    return events


async def test_a_v1_journal_is_migrated_with_everything(tmp_path: Path):
    state = tmp_path / "state"
    events = v1_journal(state)
    seen: list[tuple[str, int, int]] = []
    assert migrate.migrate(state, lambda what, done, total: seen.append((what, done, total)))
    assert ("events", len(events), len(events)) in seen and seen[-1][0] == "done"
    assert not (state / "journal.db").exists()
    kept = state / "journal.db.v1-migrated"
    with sqlite3.connect(kept) as conn:  # kept, intact, for a rollback
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == len(events)
    assert migrate.migrate(state) is False  # once only

    clock = FakeClock(now=2_000.0)
    async with Journal(
        state / "journal", sinks=["a", "b"], clock=clock, dedupe_window=1_075, retain_delivered=0
    ) as j:
        assert (j.last_seq, j.cursor("a"), j.cursor("b")) == (4 + len(events), 7, 4)
        records = await j.read_after(0, 100)
        assert [r.seq for r in records] == list(range(5, 5 + len(events)))
        assert [r.event for r in records] == events
        assert [r.appended_at for r in records] == [1_000.0 + i for i in range(len(events))]
        assert records[-1].data_json == b"" and records[-1].event.data is None
        (retry,) = await j.due_retries("a", 1_500.0)
        assert (retry.seq, retry.event, retry.attempt, retry.last_error) == (
            6,
            events[1],
            2,
            "HTTP 503",
        )
        (dl,) = await j.dead_letters()
        assert (dl.dlid, dl.sink, dl.event, dl.attempts) == (1, "b", events[0], 8)
        assert await j.get_state("sse:last_id:r1") == "42"
        # Ids of retained events and of tombstones are still known.
        assert await j.append(events[3]) is AppendStatus.DUPLICATE
        assert await j.append(make_event(-1)) is AppendStatus.DUPLICATE
        assert await j.append(make_event(-2)) is AppendStatus.DUPLICATE
        # Tombstones expire as before: 900 is older than now - window (925), 950 is not.
        await j.run_retention()
        assert await j.append(make_event(-1)) is AppendStatus.APPENDED
        assert await j.append(make_event(-2)) is AppendStatus.DUPLICATE
        assert j.last_seq == 5 + len(events)
        # New work continues the seq.
        await j.ack("a", j.last_seq)
        assert j.cursor("a") == j.last_seq


async def test_the_daemon_migrates_on_first_start(tmp_path: Path):
    state = tmp_path / "state"
    events = v1_journal(state, n=3)
    app = App(settings(tmp_path, sinks={"a": {"type": "file"}}), handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        with anyio.fail_after(10):
            await app.ready.wait()
        assert app.journal.last_seq == 4 + len(events)
        app.request_shutdown()
    assert (state / "journal.db.v1-migrated").is_file()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_crash_during_migration_leaves_v1_usable_and_a_restart_finishes(
    tmp_path: Path,
):
    state = tmp_path / "state"
    state.mkdir()
    events = [make_event(i) for i in range(30_000)]
    write_v1(state / "journal.db", events, cursors={"a": 100})
    before = _digest(state / "journal.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "argbridge.journal.migrate", str(state), "--batch", "500"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()  # "migrating events: 0/30000"
        line = proc.stdout.readline()  # the first batch is written: kill mid-migration
        assert line.startswith(b"migrating events: 500/"), line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    # Killed mid-way: the v1 journal is untouched and still the journal.
    assert not (state / "journal").exists()
    assert (state / "journal.migrating").exists()
    assert _digest(state / "journal.db") == before
    with sqlite3.connect(state / "journal.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == len(events)
    # The next start migrates from scratch.
    assert migrate.migrate(state)
    assert not (state / "journal.migrating").exists()

    async def check() -> None:
        async with Journal(state / "journal", sinks=["a"]) as j:
            assert (j.last_seq, j.cursor("a")) == (len(events), 100)
            assert [r.event for r in await j.read_after(29_990, 10)] == events[-10:]

    anyio.run(check)


def test_a_crash_after_the_switch_is_finished_on_the_next_start(tmp_path: Path):
    state = tmp_path / "state"
    v1_journal(state)
    assert migrate.migrate(state)
    # As if the process died between the switch and renaming the v1 file.
    (state / "journal.db.v1-migrated").rename(state / "journal.db")
    assert migrate.migrate(state) is False
    assert not (state / "journal.db").exists() and (state / "journal.db.v1-migrated").exists()
