"""A sans-I/O server-sent events decoder that follows the WHATWG rules (HTML §9.2.6).

Owns: turning the bytes of a ``text/event-stream`` body into :class:`SSEEvent` values,
plus the stream state a reconnecting client needs (:attr:`SSEDecoder.last_event_id`,
:attr:`SSEDecoder.retry_ms`). No I/O: feed it chunks in any split and it yields the
same events.

It replaces httpx-sse's decoder, which (0.4.3) yields phantom empty events after an
``id``, loses the first event behind a leading BOM, honours ``charset=`` and accepts
``retry: +10``. The rules implemented here:

- the stream is UTF-8 (invalid bytes become U+FFFD); exactly one leading BOM is removed;
- lines end at CRLF, LF or a lone CR; a CR at the end of a chunk ends the line at once
  and a LF at the start of the next chunk is then skipped (so nothing is held back);
- ``:`` lines are comments; ``field:value`` drops one leading space of the value; a line
  without a colon is a field with an empty value; unknown fields are ignored;
- ``data`` lines are joined with ``\\n``; ``id`` containing NUL is ignored; ``retry``
  only when all ASCII digits;
- a blank line dispatches: the last event id is updated even when the data buffer is
  empty, but then no event is produced; one trailing ``\\n`` of the data is removed;
- an unterminated block at end of stream is discarded (:meth:`SSEDecoder.close`);
- a reader may :meth:`SSEDecoder.abandon` the event being read (when
  :attr:`SSEDecoder.held_bytes` passes its memory bound): its bytes are dropped as
  they arrive and it dispatches nothing (its ``id``, if any, still counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: ``type`` (``"message"`` by default), ``data``, and the
    last event id in force when it was dispatched (``""`` when none)."""

    data: str
    type: str = "message"
    id: str = ""
    #: Whether this event's own block carried the ``id`` (else it is inherited).
    own_id: bool = field(default=False, compare=False)


class SSEDecoder:
    """Incremental decoder: :meth:`feed` bytes, get complete events."""

    __slots__ = (
        "_data",
        "_data_len",
        "_drop_block",
        "_event_type",
        "_has_data",
        "_held",
        "_id_buffer",
        "_id_in_block",
        "_parts",
        "_skip_lf",
        "_skip_line",
        "_started",
        "bytes_fed",
        "last_event_id",
        "retry_ms",
    )

    def __init__(self, last_event_id: str = "") -> None:
        #: The incomplete line so far, in the chunks it arrived in: a long line (a base64
        #: screenshot) is joined once when it ends, not copied again with every chunk.
        self._parts: list[bytes] = []
        self._held = 0  # bytes in _parts
        self._data_len = 0  # characters in _data
        self._skip_line = False  # dropping the rest of an abandoned line
        self._drop_block = False  # the abandoned line's event dispatches nothing
        self._started = False
        self._skip_lf = False
        self._data: list[str] = []
        self._has_data = False
        self._event_type = ""
        self._id_buffer = last_event_id
        self._id_in_block = False
        #: The id a reconnecting client sends as ``Last-Event-ID`` (``""``: send none).
        self.last_event_id = last_event_id
        #: Reconnection time the server asked for with ``retry:`` (ms), if any.
        self.retry_ms: int | None = None
        #: Bytes fed so far (for positions in log lines).
        self.bytes_fed = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete line held until its end arrives."""
        return self._held

    @property
    def held_bytes(self) -> int:
        """What the event being read holds so far: its incomplete line and its data."""
        return self._held + self._data_len

    def abandon(self) -> int:
        """Drop the event being read (its held bytes, the rest of its current line as it
        arrives, and its dispatch: it produces no event); returns the bytes dropped.
        A reader calls it when :attr:`held_bytes` passes its bound."""
        dropped = self.held_bytes
        if self._parts:
            self._skip_line = True
        self._parts = []
        self._held = 0
        self._data = []
        self._data_len = 0
        self._drop_block = True
        return dropped

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk``; return the events it completed (possibly none)."""
        if not chunk:
            return []
        self.bytes_fed += len(chunk)
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        if self._skip_line:
            cut = min((i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                return []
            self._skip_line = False
            if chunk[cut : cut + 2] == b"\r\n":
                cut += 1
            elif chunk[cut:] == b"\r":
                self._skip_lf = True
            chunk = chunk[cut + 1 :]
            if not chunk:
                return []
        if self._started and b"\n" not in chunk and b"\r" not in chunk:
            self._parts.append(chunk)  # still inside a line: nothing to dispatch
            self._held += len(chunk)
            return []
        data = b"".join((*self._parts, chunk)) if self._parts else chunk
        self._parts = []
        self._held = 0
        if not self._started:
            if len(data) < 3 and _BOM.startswith(data):
                self._parts = [data]
                self._held = len(data)
                return []
            self._started = True
            if data.startswith(_BOM):
                data = data[3:]
        if b"\r" in data:
            if data.endswith(b"\r"):
                self._skip_lf = True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = data.split(b"\n")
        rest = lines.pop()
        if rest:
            self._parts = [rest]
            self._held = len(rest)
        events: list[SSEEvent] = []
        for raw in lines:
            event = self._line(raw)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> None:
        """End of stream: an unterminated block (and a partial line) is discarded."""
        self._parts = []
        self._held = 0
        self._data_len = 0
        self._skip_line = False
        self._drop_block = False
        self._data = []
        self._has_data = False
        self._event_type = ""
        self._id_in_block = False
        self._started = False
        self._skip_lf = False

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        if raw[0] == 0x3A:  # ":" comment
            return None
        line = raw.decode("utf-8", "replace")
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_len += len(value) + 1
            self._has_data = True
        elif field == "event":
            self._event_type = value
        elif field == "id":
            if "\x00" not in value:
                self._id_buffer = value
                self._id_in_block = True
        elif field == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        self.last_event_id = self._id_buffer
        own_id = self._id_in_block
        self._id_in_block = False
        if not self._has_data or self._drop_block:
            self._drop_block = False
            self._data = []
            self._data_len = 0
            self._has_data = False
            self._event_type = ""
            return None
        data = "\n".join(self._data)
        event = SSEEvent(data, self._event_type or "message", self.last_event_id, own_id)
        self._data = []
        self._data_len = 0
        self._has_data = False
        self._event_type = ""
        return event


def decode_all(body: bytes) -> list[SSEEvent]:
    """Decode a complete stream body (convenience for tests and tools)."""
    decoder = SSEDecoder()
    events = decoder.feed(body)
    decoder.close()
    return events
