"""The progress record and the start-up reconciliation (pure)."""

from __future__ import annotations

import orjson
import pytest

from argbridge.config.sinks import KafkaSinkConfig
from argbridge.delivery.kafka_progress import (
    Position,
    ProgressError,
    Verdict,
    decode_position,
    encode_position,
    fenced_alert_event,
    progress_key,
    reconcile,
    transactional_id,
)

P = Position("j1", 40, "ev-40")


def test_position_round_trips_and_names_its_owner():
    value = encode_position(P, instance_id="i1", sink="k", at=12.3456)
    assert decode_position(value) == P
    doc = orjson.loads(value)
    assert doc["instance"] == "i1" and doc["sink"] == "k" and doc["v"] == 1


def test_tombstone_is_no_position():
    assert decode_position(None) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"v": 2}', "version 2"),
        (b'{"v": 1, "journal": "", "seq": 1, "event_id": "e"}', "'journal'"),
        (b'{"v": 1, "journal": "j", "seq": -1, "event_id": "e"}', "'seq'"),
        (b'{"v": 1, "journal": "j", "seq": true, "event_id": "e"}', "'seq'"),
        (b'{"v": 1, "journal": "j", "seq": 1, "event_id": 5}', "'event_id'"),
    ],
)
def test_unreadable_records_are_errors_never_guesses(value, message):
    with pytest.raises(ProgressError, match=message):
        decode_position(value)


def test_ids_per_instance_and_sink():
    assert progress_key("i1", "k") == b"i1/k"
    assert transactional_id("argbridge-", "i1", "k") == "argbridge-i1.k"


def decide(position, *, journal_id="j1", last_seq=100, cursor=30, event_id_at="ev-40"):
    return reconcile(
        position, journal_id=journal_id, last_seq=last_seq, cursor=cursor, event_id_at=event_id_at
    )


def test_no_position_delivers_from_the_cursor():
    d = decide(None, event_id_at=None)
    assert (d.verdict, d.cursor, d.committed) == (Verdict.NONE, 30, None)


def test_committed_ahead_of_the_cursor_moves_it_forward():
    d = decide(P)
    assert (d.verdict, d.cursor, d.committed) == (Verdict.RESUME, 40, P)
    assert "had not followed" in d.detail


def test_progress_topic_wins_over_a_cursor_ahead():
    d = decide(P, cursor=60)
    assert (d.verdict, d.cursor) == (Verdict.RESUME, 40)
    assert "ahead of what was committed" in d.detail


def test_a_position_of_another_journal_is_ignored():
    d = decide(P, journal_id="j2", cursor=0, last_seq=10, event_id_at=None)
    assert (d.verdict, d.cursor, d.committed) == (Verdict.OTHER_JOURNAL, 0, None)
    assert "wiped" in d.detail


def test_a_position_ahead_of_the_journal_is_ignored():
    d = decide(P, last_seq=20, cursor=10, event_id_at=None)
    assert (d.verdict, d.cursor, d.committed) == (Verdict.DIVERGED, 10, None)


def test_another_event_at_that_seq_is_ignored():
    d = decide(P, event_id_at="ev-other")
    assert (d.verdict, d.cursor, d.committed) == (Verdict.DIVERGED, 30, None)


def test_an_unverifiable_position_ahead_of_the_cursor_is_ignored():
    d = decide(P, event_id_at=None, cursor=30)
    assert d.verdict is Verdict.DIVERGED


def test_a_retained_away_position_the_cursor_passed_is_trusted():
    d = decide(P, event_id_at=None, cursor=45)
    assert (d.verdict, d.cursor) == (Verdict.RESUME, 40)


def test_fenced_alert_event():
    e = fenced_alert_event("k", "i1", "argbridge-i1.k", at=1.0)
    assert e.type == "argbridge.sink.fenced" and e.severity == "high"
    assert e.data["instance_id"] == "i1"


def test_config_defaults_and_checks():
    c = KafkaSinkConfig(type="kafka")
    assert c.delivery == "at-least-once" and c.progress_topic == "argbridge.progress"
    with pytest.raises(ValueError, match="exactly-once"):
        KafkaSinkConfig(type="kafka", delivery="exactly-once", acks=1, enable_idempotence=False)
    with pytest.raises(ValueError, match="transaction_timeout"):
        KafkaSinkConfig(type="kafka", delivery="exactly-once", transaction_timeout=10)
    with pytest.raises(ValueError, match="topic name"):
        KafkaSinkConfig(type="kafka", progress_topic="bad topic")
    with pytest.raises(ValueError, match="without '/'"):
        KafkaSinkConfig(type="kafka", instance_id="a/b")
