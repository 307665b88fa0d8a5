"""``argbridge journal stats|show|find|backup``, on a stopped journal and on one a live
process is writing (a backup taken under load restores to a consistent journal)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import anyio
import orjson
import pytest

from argbridge.cli import main
from argbridge.journal import AppendStatus, Journal
from tests.conftest import make_event
from tests.test_journal import FakeClock


async def fill(state: Path) -> None:
    clock = FakeClock()
    async with Journal(state / "journal", sinks=["k", "w"], clock=clock, retain_delivered=0) as j:
        await j.append_many([make_event(n, subject=f"run-{n % 2}") for n in range(6)])
        await j.ack("k", 6)
        await j.ack("w", 2)
        (first, *_) = await j.read_after(0, 1)
        await j.dead_letter("w", first, "HTTP 410", 1)
        await j.set_state("sse:last_id:r", "9")
        assert await j.run_retention() == 2  # seq 1 and 2: now tombstones


def test_stats_show_and_find(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    state = tmp_path / "state"
    anyio.run(fill, state)
    assert main(["journal", "stats", "--state-dir", str(state), "--json"]) == 0
    st = orjson.loads(capsys.readouterr().out)
    assert (st["last_seq"], st["first_retained_seq"], st["events"], st["tombstones"]) == (
        6,
        3,
        4,
        2,
    )
    assert st["cursors"] == {"k": 6, "w": 2} and st["backlog"] == {"k": 0, "w": 4}
    assert (st["dead_letters"], st["retries"], st["state_keys"]) == (1, 0, 1)
    assert main(["journal", "stats", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "last seq 6, retained 4 event(s) from seq 3" in out
    assert "sink w: cursor 2, backlog 4" in out

    e = make_event(4, subject="run-0")
    assert main(["journal", "show", e.id, "--state-dir", str(state)]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["seq"] == 5 and shown["event"] == orjson.loads(e.to_json())
    assert main(["journal", "show", make_event(0).id, "--state-dir", str(state)]) == 0
    assert "deleted by retention" in capsys.readouterr().out
    assert main(["journal", "show", "nope", "--state-dir", str(state)]) == 1
    assert "no event with id 'nope'" in capsys.readouterr().err

    assert main(["journal", "find", "--subject", "run-1", "--state-dir", str(state)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in lines] == [4, 6]
    assert main(["journal", "find", "--subject", "x", "--state-dir", str(state)]) == 1
    assert main(["journal", "stats", "--state-dir", str(tmp_path / "none")]) == 3
    assert "no journal here" in capsys.readouterr().err


@pytest.mark.slow
def test_backup_of_a_journal_being_written_restores_consistently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    state = tmp_path / "state"
    state.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.journal_child", str(state / "journal")],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    told: list[str] = []
    try:
        while len(told) < 2000:
            told.append(proc.stdout.readline().decode().strip())
        # The writer holds the journal (LevelDB's lock): stats read a snapshot copy.
        assert main(["journal", "stats", "--state-dir", str(state), "--json"]) == 0
        live = orjson.loads(capsys.readouterr().out)
        assert live["last_seq"] > 0
        before = [line[2:] for line in told if line.startswith("A ")]
        assert main(["journal", "backup", str(tmp_path / "backup"), "--state-dir", str(state)]) == 0
        assert "backed up" in capsys.readouterr().out
        for _ in range(500):  # still writing after the backup
            told.append(proc.stdout.readline().decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()

    # Restore: the copy becomes a state dir's journal.
    restored = tmp_path / "restored"
    restored.mkdir()
    (tmp_path / "backup").rename(restored / "journal")

    async def check() -> None:
        async with Journal(restored / "journal", sinks=["s"]) as j:
            records = await j.read_after(0, 10**6)
            assert [r.seq for r in records] == list(range(1, j.last_seq + 1))
            ids = {r.event.id for r in records}
            assert set(before) <= ids  # everything committed before the backup began
            assert len(ids) == len(records)
            assert j.cursor("s") <= j.last_seq
            assert await j.append(make_event(0)) is AppendStatus.APPENDED

    anyio.run(check)
