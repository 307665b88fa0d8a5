"""The journal's two databases (``journal/engine.py``): where each key lives, the index
caught up from the log after it lost writes, and the upgrade of a format-2 journal."""

from __future__ import annotations

import shutil
from pathlib import Path

import plyvel
import pytest

from argbridge.errors import JournalError
from argbridge.journal import AppendStatus, Journal, engine, store
from argbridge.journal.records import encoded
from tests.conftest import make_event
from tests.support.manual_clock import ManualClock


def _keys(db: plyvel.DB) -> list[bytes]:
    with db.iterator(include_value=False) as it:
        return list(it)


async def test_events_and_ledger_in_the_log_ids_and_tombstones_in_the_index(tmp_path: Path):
    clock = ManualClock()
    path = tmp_path / "j"
    async with Journal(path, sinks=["a"], clock=clock, retain_delivered=10.0) as journal:
        await journal.append_many([make_event(n) for n in range(20)])
        await journal.set_state("src:last_id", "19")
        await journal.ack("a", 10)
        clock.advance(60)
        assert await journal.run_retention() == 10  # tombstones for 1..10
    db = engine.open_db(path)
    try:
        log_keys, index_keys = _keys(db.log), _keys(db.ids)
        assert {k[:1] for k in index_keys} == {b"i", b"t", b"m"}
        assert not [k for k in log_keys if k[:1] in (b"i", b"t")]
        # Everything else the log holds sorts after every event key: a level-0 table's
        # range starts at its first event, so no older event table overlaps it.
        events = [k for k in log_keys if k[:1] == store.P_EVENT]
        others = [k for k in log_keys if k[:1] != store.P_EVENT]
        assert len(events) == 10 and others and min(others) > max(events)
        assert db.ids.get(engine.K_IDS_SEQ) == store.pack_u64(20)
    finally:
        db.close()


async def test_the_index_is_caught_up_from_the_log_when_it_lost_writes(tmp_path: Path):
    path = tmp_path / "j"
    first = [make_event(n) for n in range(30)]
    async with Journal(path, sinks=["a"]) as journal:
        assert await journal.append_many(first) == [AppendStatus.APPENDED] * 30
    # What a crash between the log's write and the index's, or a power loss that took
    # the index's unsynced tail, leaves: an index behind the log (here, far behind).
    db = engine.open_db(path)
    with db.ids.write_batch() as batch:
        for event in first[12:]:
            batch.delete(store.id_key(event.id))
        batch.put(engine.K_IDS_SEQ, store.pack_u64(12))
    db.close()
    async with Journal(path, sinks=["a"]) as journal:
        again = await journal.append_many([*first, make_event(30)])
        assert again == [AppendStatus.DUPLICATE] * 30 + [AppendStatus.APPENDED]
        assert journal.last_seq == 31
    # And with no index at all.
    shutil.rmtree(path / engine.IDS_DIR)
    async with Journal(path, sinks=["a"]) as journal:
        assert await journal.append_many(first) == [AppendStatus.DUPLICATE] * 30
        assert await journal.log.seq_of(first[29].id) == 30


def _write_v2(path: Path) -> list[str]:
    """A format-2 journal (one database; cursors under ``c``, dead letters under ``d``),
    as the previous release wrote it: 6 events, the first 2 deleted by retention (their
    ids tombstones), a cursor at 4, one dead letter, one state key. Its event ids."""
    db = plyvel.DB(str(path), create_if_missing=True)
    ids = []
    with db.write_batch(sync=True) as wb:
        wb.put(store.K_VERSION, b"2")
        wb.put(store.K_LAST_SEQ, store.pack_u64(6))
        for seq in range(1, 7):
            event = make_event(seq)
            ids.append(event.id)
            _, body, split = encoded(event)
            if seq > 2:
                wb.put(store.seq_key(seq), store.pack_joined(100.0 + seq, body, split))
            else:
                wb.put(b"t" + store.pack_u64(seq), store.pack_tomb(100.0 + seq, event.id))
            wb.put(store.id_key(event.id), store.pack_index(seq, 100.0 + seq))
        wb.put(b"c" + b"a", store.pack_u64(4))
        meta = {
            "sink": "a",
            "event_id": ids[2],
            "seq": 3,
            "reason": "refused",
            "attempts": 1,
            "failed_at": 105.0,
        }
        _, body, split = encoded(make_event(3))
        wb.put(b"d" + store.pack_u64(1), store.pack_parts(meta, body[:split], body[split:]))
        wb.put(store.state_key("src:last_id"), store.pack_state(106.0, "6"))
    db.close()
    return ids


async def test_a_format_2_journal_is_upgraded_at_open(tmp_path: Path):
    path = tmp_path / "j"
    ids = _write_v2(path)
    (path / engine.IDS_DIR).mkdir()  # a crashed upgrade's leftovers: started over
    (path / engine.IDS_DIR / "junk").write_text("x")
    async with Journal(path, sinks=["a"]) as journal:
        assert journal.cursor("a") == 4
        assert journal.last_seq == 6
        assert await journal.get_state("src:last_id") == "6"
        assert [d.reason for d in await journal.dead_letters("a")] == ["refused"]
        # Every id, retained or a tombstone, is still known.
        events = [make_event(seq) for seq in range(1, 7)]
        assert [e.id for e in events] == ids
        assert await journal.append_many(events) == [AppendStatus.DUPLICATE] * 6
        assert [r.seq for r in await journal.read("a", 10)] == [5, 6]
    db = engine.open_db(path)
    try:
        assert db.log.get(store.K_VERSION) == engine.FORMAT_VERSION
        assert not [k for k in _keys(db.log) if k[:1] in (b"i", b"t", b"c", b"d")]
    finally:
        db.close()


async def test_an_upgrade_interrupted_after_its_flip_finishes_at_the_next_open(tmp_path: Path):
    path = tmp_path / "j"
    ids = _write_v2(path)
    db = engine.open_db(path)  # upgrades
    db.close()
    # The old index keys are deleted from the log after the flip to format 3; a crash
    # meanwhile leaves some behind, which the next open deletes.
    raw = plyvel.DB(str(path))
    raw.put(store.id_key(ids[0]), store.pack_index(1, 101.0), sync=True)
    raw.close()
    db = engine.open_db(path)
    try:
        assert not [k for k in _keys(db.log) if k[:1] == b"i"]
        assert db.get(store.id_key(ids[0])) == store.pack_index(1, 101.0)  # in the index
    finally:
        db.close()


def test_a_journal_of_an_unknown_format_is_refused(tmp_path: Path):
    raw = plyvel.DB(str(tmp_path / "j"), create_if_missing=True)
    raw.put(store.K_VERSION, b"9")
    raw.close()
    with pytest.raises(JournalError, match="journal format 9 is not one"):
        engine.open_db(tmp_path / "j")
