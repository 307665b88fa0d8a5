"""structlog setup: JSON lines (console renderer on a TTY) with secret redaction.

Owns: :func:`configure_logging`, :func:`redact` (the processor that removes secrets
from every event dict: values of keys that name secrets, ``?token=``-style query
parameters in URLs, ``Bearer`` tokens and registered secret values),
:func:`register_secret` so configured secrets are masked wherever they appear, and
:class:`Throttle`, which keeps a flood of one kind of warning (say, unsigned requests)
from flooding the log. Libraries' own stdlib log lines (aiokafka) are rendered as the
daemon's (JSON when configured) and throttled the same way.
"""

from __future__ import annotations

import logging as std_logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

import structlog

MASK = "**********"
_SECRET_KEYS = re.compile(
    r"(token|secret|password|passwd|api_key|apikey|authorization|signature|cookie|credential)",
    re.I,
)
_URL_SECRET = re.compile(
    r"([?&](?:token|access_token|api_key|apikey|key|secret|signature|sig|password)=)[^&#\s'\"]*",
    re.I,
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears in a log line (min. 4 characters)."""
    if value and len(value) >= 4:
        _registered.add(value)


def register_secrets(values: Iterable[str | None]) -> None:
    for v in values:
        register_secret(v)


def redact_text(text: str) -> str:
    """Remove secrets from free text (URLs with ``?token=``, bearer tokens, known values)."""
    text = _URL_SECRET.sub(lambda m: m.group(1) + MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    for secret in _registered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_value(key: str | None, value: Any) -> Any:
    if key is not None and _SECRET_KEYS.search(key) and value is not None:
        if isinstance(value, bool | int | float):
            return value
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(None, v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every value of the event dict."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(None if key == "event" else key, event_dict[key])
    return event_dict


def _redact_exception(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if isinstance(event_dict.get("exception"), str):
        event_dict["exception"] = redact_text(event_dict["exception"])
    return event_dict


#: Library log lines (aiokafka's "Unable connect to node…" during an outage) of one kind
#: (logger + message template) allowed per window; the next one says how many were held.
LIBRARY_BURST = 5
LIBRARY_WINDOW = 60.0


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream: Any = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Configure structlog (and stdlib logging of libraries) for the daemon.

    Libraries' stdlib log records (aiokafka, websockets…) are rendered by the same
    processors as the daemon's own lines (JSON when configured, redacted), with the
    logger's name in ``logger``, and rate-limited per logger and message template
    (:data:`LIBRARY_BURST` per :data:`LIBRARY_WINDOW` seconds, on ``clock``): a broker
    outage no longer writes thousands of plain-text lines."""
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    lvl = getattr(std_logging, level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Any
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        processors = [*shared, _redact_exception_console, renderer]
    else:
        processors = [
            *shared,
            structlog.processors.format_exc_info,
            _redact_exception,
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through stdlib logging: the same rendering (JSON when
    # configured), redacted, rate-limited, at warning level and above.
    handler = std_logging.StreamHandler(stream)
    handler.addFilter(_LibraryThrottle(Throttle(LIBRARY_BURST, LIBRARY_WINDOW), clock))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=("suppressed",)),
                *shared,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *processors[len(shared) :],
            ],
        )
    )
    root = std_logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, std_logging.WARNING))


def _redact_exception_console(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    exc = event_dict.get("exc_info")
    if exc is True or isinstance(exc, BaseException | tuple):
        # Render the traceback ourselves so it can be redacted before it is printed.
        event_dict = structlog.processors.format_exc_info(_logger, _method, event_dict)
        return _redact_exception(_logger, _method, event_dict)
    return event_dict


class _LibraryThrottle(std_logging.Filter):
    """Hold back a library's flood of one kind of line (see :class:`Throttle`); the next
    line of that kind let through carries ``suppressed``."""

    def __init__(self, throttle: Throttle, clock: Callable[[], float]) -> None:
        super().__init__()
        self.throttle = throttle
        self.clock = clock

    def filter(self, record: std_logging.LogRecord) -> bool:
        suppressed = self.throttle.allow(f"{record.name}:{record.msg}", self.clock())
        if suppressed is None:
            return False
        if suppressed:
            record.suppressed = suppressed
        return True


class Throttle:
    """At most ``burst`` log lines per key in each ``window`` seconds (sans-I/O: the
    caller passes the monotonic time). The next line logged after some were held back
    carries how many (``suppressed``); metrics still count every occurrence."""

    __slots__ = ("_state", "burst", "window")

    def __init__(self, burst: int = 5, window: float = 60.0) -> None:
        self.burst = burst
        self.window = window
        #: key -> [window start, lines logged in it, suppressed since the last line]
        self._state: dict[str, list[float]] = {}

    def allow(self, key: str, now: float) -> int | None:
        """``None``: hold this line back; else log it, with this many suppressed before."""
        state = self._state.get(key)
        if state is None:
            state = self._state[key] = [now, 0, 0]
        elif now - state[0] >= self.window:
            state[0], state[1] = now, 0
        if state[1] >= self.burst:
            state[2] += 1
            return None
        state[1] += 1
        suppressed = int(state[2])
        state[2] = 0
        return suppressed


def get_logger(**bind: Any) -> Any:
    """A structlog logger bound to ``bind`` (e.g. ``component=…, kind=source``)."""
    return structlog.get_logger("argbridge").bind(**bind)
