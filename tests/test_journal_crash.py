"""SIGKILL at any point: a real process working the journal is killed; everything it was
told is durable must be there after reopening, and every invariant must still hold."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from argbridge.journal import AppendStatus, Journal
from tests.support.journal_child import event

pytestmark = pytest.mark.slow


def run_and_kill(path: Path, lines: int) -> list[str]:
    """Start the child, read ``lines`` lines of its output, SIGKILL it; its output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.journal_child", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        while len(seen) < lines:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"child exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            seen.append(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return seen


async def check_invariants(path: Path, seen: list[str], fresh: int = -1) -> None:
    told = {kind: [line[2:] for line in seen if line[0] == kind] for kind in "AKRDS"}
    async with Journal(path, sinks=["s"], max_backlog_events=10**9) as j:
        last = j.last_seq
        records = await j.read_after(0, last + 10)
        # Dense, increasing seqs; unique ids.
        assert [r.seq for r in records] == list(range(1, last + 1))
        ids = [r.event.id for r in records]
        assert len(set(ids)) == len(ids)
        # Every append that returned is there, and is still known as a duplicate.
        assert set(told["A"]) <= set(ids)
        for event_id in told["A"][-5:]:
            n = next(r.event for r in records if r.event.id == event_id).data["n"]
            assert await j.append(event(n)) is AppendStatus.DUPLICATE
        # The cursor moved only forward, to at least the last ack that returned.
        acked = max(map(int, told["K"]), default=0)
        assert acked <= j.cursor("s") <= last
        # Retries and dead letters that returned are kept (with their own copy).
        retries = {r.event.id for r in await j.due_retries("s", 1e12, limit=10**6)}
        letters = await j.dead_letters("s", limit=10**6)
        dead = {d.event.id for d in letters}
        assert set(told["R"]) <= retries
        assert set(told["D"]) <= dead
        assert not retries & dead
        assert await j.count_retries("s") == len(retries)
        assert await j.count_dead_letters("s") == len(letters)
        # State: at least the last value a set_state returned for.
        state = int(await j.get_state("n") or 0)
        assert state >= max(map(int, told["S"]), default=0)
        # The journal takes new work after the crash.
        assert await j.append(event(fresh)) is AppendStatus.APPENDED
        assert j.last_seq == last + 1


@pytest.mark.parametrize("lines", [0, 1, 40, 700, 4000])
async def test_sigkill_at_any_point_keeps_every_invariant(tmp_path: Path, lines: int):
    path = tmp_path / "journal"
    seen = run_and_kill(path, lines)
    await check_invariants(path, seen)


async def test_repeated_sigkills_on_the_same_journal(tmp_path: Path):
    path = tmp_path / "journal"
    for round_, lines in enumerate((300, 5, 1500)):
        seen = run_and_kill(path, lines)
        await check_invariants(path, seen, fresh=-1 - round_)
