"""A process that works a journal hard until it is killed: for the SIGKILL tests.

``python -m tests.support.journal_child DIR`` appends events from 8 concurrent tasks,
reads and acks as a sink does, schedules retries, dead-letters and sets state, and
prints one line per operation *after* it returned (so after it was durable):
``A <id>``, ``K <seq>``, ``R <id>``, ``D <id>``, ``S <n>``. The parent kills it with
SIGKILL after some number of lines and checks that everything printed survived.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from argbridge.events import CloudEvent, deterministic_id
from argbridge.journal import AppendStatus, Journal


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def event(n: int) -> CloudEvent:
    return CloudEvent(
        id=deterministic_id("crash", n),
        source="urn:crash",
        type="t",
        subject=f"run-{n % 5}",
        data={"n": n, "pad": "x" * 300},
    )


async def main(path: Path) -> None:
    async with Journal(path, sinks=["s"], max_backlog_events=10**9) as journal:
        counter = iter(range(10**9))

        async def appender() -> None:
            while True:
                n = next(counter)
                ev = event(n)
                if await journal.append(ev) is AppendStatus.APPENDED:
                    say(f"A {ev.id}")
                if n % 7 == 0:  # a duplicate now and then
                    assert await journal.append(ev) is AppendStatus.DUPLICATE

        async def sink() -> None:
            while True:
                records = await journal.read("s", 50)
                if not records:
                    await journal.wait_for_events(journal.cursor("s"))
                    continue
                for r in records[:2]:
                    if r.seq % 2:  # by seq: a batch read again after a crash gets the same
                        await journal.schedule_retry("s", r, 1, 0.0, "HTTP 503")
                        say(f"R {r.event.id}")
                    else:
                        await journal.dead_letter("s", r, "gone", 3)
                        say(f"D {r.event.id}")
                await journal.ack("s", records[-1].seq)
                say(f"K {records[-1].seq}")

        async def state() -> None:
            n = 0
            while True:
                n += 1
                await journal.set_state("n", str(n))
                say(f"S {n}")

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(appender)
            tg.start_soon(sink)
            tg.start_soon(state)


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]))
