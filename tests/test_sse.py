"""The SSE decoder against the web-platform-tests ``eventsource/format-*`` cases.

Each WPT case serves ``resources/message.py?message=…`` (``\\n\\n`` appended unless
``newline=none``) or ``last-event-id*.py``; the inputs below are those bodies, and the
expectations are the ``(data, lastEventId)`` pairs (and event types) the JS asserts.
Every case is also fed split at every byte position.
"""

from __future__ import annotations

import pytest

from argbridge.sse import SSEDecoder, SSEEvent, decode_all

LONG = "x" * 2048

# (wpt name, body bytes, expected [(type, data, last_event_id)], expected retry_ms)
CASES: list[tuple[str, bytes, list[tuple[str, str, str]], int | None]] = [
    (
        "format-bom",
        b"\xef\xbb\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\ndata:3\n\n",
        [("message", "1", ""), ("message", "3", "")],
        None,
    ),
    (
        "format-bom-2",
        b"\xef\xbb\xbf\xef\xbb\xbfdata:1\n\ndata:2\n\ndata:3\n\n",
        [("message", "2", ""), ("message", "3", "")],
        None,
    ),
    (
        "format-comments",
        (
            "data:1\r:\0\n:\r\ndata:2\n:" + LONG + "\rdata:3\n:data:fail\r:" + LONG + "\ndata:4\n"
        ).encode(),
        [],  # no blank line at the end (newline=none): the block is discarded at EOF
        None,
    ),
    (
        "format-comments (terminated)",
        (
            "data:1\r:\0\n:\r\ndata:2\n:" + LONG + "\rdata:3\n:data:fail\r:" + LONG + "\ndata:4\n\n"
        ).encode(),
        [("message", "1\n2\n3\n4", "")],
        None,
    ),
    (
        "format-data-before-final-empty-line",
        b"retry:1000\ndata:test1\n\nid:test\ndata:test2",
        [("message", "test1", "")],
        1000,
    ),
    (
        "format-field-data",
        b"data:\n\ndata\ndata\n\ndata:test\n\n",
        [("message", "", ""), ("message", "\n", ""), ("message", "test", "")],
        None,
    ),
    (
        "format-field-event-empty",
        b"event: \ndata:data\n\n",
        [("message", "data", "")],
        None,
    ),
    (
        "format-field-event",
        b"event:test\ndata:x\n\ndata:x\n\n",
        [("test", "x", ""), ("message", "x", "")],
        None,
    ),
    (
        "format-field-id",
        "id: …\ndata: hello\n\n".encode(),
        [("message", "hello", "…")],
        None,
    ),
    (
        "format-field-id-2",
        "id: …\nretry: 200\ndata: hello\n\n".encode(),
        [("message", "hello", "…")],
        200,
    ),
    (
        "format-field-id-3 persists",
        b"id: 1\ndata: 1\n\ndata: 2\n\nid: 2\ndata:3\n\ndata:4\n\n",
        [
            ("message", "1", "1"),
            ("message", "2", "1"),
            ("message", "3", "2"),
            ("message", "4", "2"),
        ],
        None,
    ),
    (
        "format-field-id-3 resets",
        b"id: 1\ndata: 1\n\nid: \ndata:2\n\ndata:3\n\n",
        [("message", "1", "1"), ("message", "2", ""), ("message", "3", "")],
        None,
    ),
    (
        "format-field-id-3 resets (id without colon)",
        b"id: 1\ndata: 1\n\nid\ndata:2\n\ndata:3\n\n",
        [("message", "1", "1"), ("message", "2", ""), ("message", "3", "")],
        None,
    ),
    *[
        (
            f"format-field-id-null {value!r}",
            b"id: " + value + b"\nretry: 200\ndata: hello\n\n",
            [("message", "hello", "")],
            200,
        )
        for value in (b"\0\0", b"x\0", b"\0x", b"x\0x", b" \0")
    ],
    (
        "format-field-parsing",
        b"data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\r"
        b"data:\r\n data:32\ndata:4\n\n",
        [("message", "\0\n 2\n1\n3\n\n4", "")],
        None,
    ),
    (
        "format-field-retry-bogus",
        b"retry:3000\nretry:1000x\ndata:x\n\n",
        [("message", "x", "")],
        3000,
    ),
    ("format-field-retry-empty", b"retry\ndata:test\n\n", [("message", "test", "")], None),
    ("format-field-retry", b"retry:03000\ndata:x\n\n", [("message", "x", "")], 3000),
    (
        "format-field-unknown",
        b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n",
        [("message", "test\n\ntest", "")],
        None,
    ),
    (
        "format-leading-space",
        b"data:\ttest\rdata: \ndata:test\n\n",
        [("message", "\ttest\n\ntest", "")],
        None,
    ),
    (
        "format-newlines",
        b"data:test\r\ndata\ndata:test\r\n\r",
        [("message", "test\n\ntest", "")],
        None,
    ),
    ("format-null-character", b"data:\0\n\n\n\n", [("message", "\0", "")], None),
    ("format-utf-8", "data:ok…\n\n".encode(), [("message", "ok…", "")], None),
    # Beyond WPT: the httpx-sse bugs (protocols.md §1) and the retry rules.
    (
        "no phantom event after an id (heartbeat comments)",
        b"id: 7\ndata: a\n\n: ping\n\n: ping\n\nid: 8\n\n",
        [("message", "a", "7")],
        None,
    ),
    ("retry with sign is ignored", b"retry: +10\ndata: a\n\n", [("message", "a", "")], None),
    ("retry with space is ignored", b"retry:  10\ndata: a\n\n", [("message", "a", "")], None),
    (
        "invalid utf-8 becomes U+FFFD",
        b"data: a\xffb\n\n",
        [("message", "a\ufffdb", "")],
        None,
    ),
    ("only one space is stripped", b"data:  two\n\n", [("message", " two", "")], None),
    (
        "CRLF CRLF dispatch",
        b"data: a\r\n\r\ndata: b\r\r",
        [("message", "a", ""), ("message", "b", "")],
        None,
    ),
]


def _triples(events: list[SSEEvent]) -> list[tuple[str, str, str]]:
    return [(e.type, e.data, e.id) for e in events]


@pytest.mark.parametrize(
    ("body", "expected", "retry"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_wpt_format_case(body, expected, retry):
    decoder = SSEDecoder()
    events = decoder.feed(body)
    decoder.close()
    assert _triples(events) == expected
    assert decoder.retry_ms == retry


@pytest.mark.parametrize(
    ("body", "expected", "retry"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_split_at_every_byte(body, expected, retry):
    for cut in range(len(body) + 1):
        decoder = SSEDecoder()
        events = decoder.feed(body[:cut]) + decoder.feed(body[cut:])
        decoder.close()
        assert _triples(events) == expected, cut
        assert decoder.retry_ms == retry


@pytest.mark.parametrize(
    ("body", "expected", "retry"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_one_byte_at_a_time(body, expected, retry):
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for i in range(len(body)):
        events += decoder.feed(body[i : i + 1])
    decoder.close()
    assert _triples(events) == expected


def test_id_only_block_updates_last_event_id_without_an_event():
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 42\n\n") == []
    assert decoder.last_event_id == "42"


def test_id_is_not_taken_before_the_block_is_dispatched():
    decoder = SSEDecoder()
    decoder.feed(b"data: a\nid: 5\n")
    assert decoder.last_event_id == ""
    assert decoder.feed(b"\n") == [SSEEvent("a", "message", "5")]
    assert decoder.last_event_id == "5"


def test_initial_last_event_id_is_kept():
    decoder = SSEDecoder(last_event_id="9")
    assert decoder.feed(b"data: a\n\n") == [SSEEvent("a", "message", "9")]


def test_cr_at_chunk_end_dispatches_immediately():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [SSEEvent("a")]
    assert decoder.feed(b"\ndata: b\n\n") == [SSEEvent("b")]


def test_pending_bytes_are_bounded_by_the_partial_line():
    decoder = SSEDecoder()
    decoder.feed(b"data: " + b"x" * 100)
    assert decoder.pending_bytes == 106
    decoder.feed(b"\n\n")
    assert decoder.pending_bytes == 0


def test_decode_all():
    assert decode_all(b"data: 1\n\ndata: 2") == [SSEEvent("1")]


def test_own_id_tells_inherited_ids_apart():
    events = SSEDecoder().feed(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert [(e.id, e.own_id) for e in events] == [("1", True), ("1", False)]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_abandon_drops_the_event_being_read_at_every_split(eol):
    big = b"x" * 300
    body = (
        b"data: one" + eol + eol
        + b"id: 7" + eol + b"event: shot" + eol + b"data: " + big + eol + b"data: more" + eol + eol
        + b"data: three" + eol + eol
    )  # fmt: skip
    # Chunks of at most 64 bytes (a transport's reads), starting at every offset; the
    # reader abandons an event once it holds more than 200 bytes.
    for size in (1, 7, 64):
        for start in range(size):
            parts = [body[:start]] + [body[i : i + size] for i in range(start, len(body), size)]
            decoder = SSEDecoder()
            events = []
            for part in parts:
                events += decoder.feed(part)
                if decoder.held_bytes > 200:
                    decoder.abandon()
            decoder.close()
            assert [e.data for e in events] == ["one", "three"], (size, start)
            assert events[1].id == "7"  # the abandoned event's id still counts


def test_held_bytes_counts_the_partial_line_and_the_data():
    decoder = SSEDecoder()
    decoder.feed(b"data: 12345\ndata: 678")
    assert decoder.pending_bytes == len(b"data: 678")
    assert decoder.held_bytes == len(b"data: 678") + len("12345") + 1
    assert decoder.abandon() > 0 and decoder.held_bytes == 0
    assert decoder.feed(b"9\n\ndata: ok\n\n") == [SSEEvent("ok")]
