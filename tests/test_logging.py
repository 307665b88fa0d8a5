"""Secrets never reach log output."""

from __future__ import annotations

import io

import orjson
import structlog

from argbridge.logging import (
    MASK,
    configure_logging,
    get_logger,
    redact_text,
    register_secret,
)

TOKEN = "tok_9f8e7d6c5b4a"


def capture(fmt: str = "json") -> io.StringIO:
    stream = io.StringIO()
    configure_logging("debug", fmt, stream=stream)
    return stream


def test_query_tokens_and_bearer_are_masked_in_text():
    text = f"wss://api.example.com/demo-runner/runs/r/stream?token={TOKEN}&x=1 Bearer {TOKEN}"
    out = redact_text(text)
    assert TOKEN not in out
    assert out.count(MASK) == 2
    assert "x=1" in out


def test_log_lines_mask_secret_keys_urls_registered_values_and_exceptions():
    stream = capture()
    register_secret("whsec_registered_value_123")
    log = get_logger(component="t")
    log.info(
        "connect",
        url=f"wss://h/stream?token={TOKEN}",
        api_key="plain-api-key-value",
        headers={"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"},
        note="the secret whsec_registered_value_123 leaked into a message",
        attempts=3,
    )
    try:
        raise RuntimeError(f"failed GET https://h/x?token={TOKEN}")
    except RuntimeError as exc:
        log.exception("boom", error=exc)
    out = stream.getvalue()
    assert TOKEN not in out
    assert "plain-api-key-value" not in out
    assert "whsec_registered_value_123" not in out
    first = orjson.loads(out.splitlines()[0])
    assert first["attempts"] == 3
    assert first["headers"]["Accept"] == "text/event-stream"
    assert first["api_key"] == MASK


def test_console_renderer_redacts_tracebacks_too():
    stream = capture("console")
    try:
        raise ValueError(f"bad url https://h/?token={TOKEN}")
    except ValueError:
        get_logger().exception("failed")
    assert TOKEN not in stream.getvalue()
    assert "failed" in stream.getvalue()


def test_stdlib_logging_of_libraries_is_redacted():
    import logging

    stream = capture()
    logging.getLogger("websockets.client").warning("connecting to wss://h/?token=%s", TOKEN)
    assert TOKEN not in stream.getvalue()
    assert "connecting" in stream.getvalue()


def teardown_module():
    structlog.reset_defaults()


def test_library_lines_are_json_and_rate_limited():
    import logging

    now = [100.0]
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream, clock=lambda: now[0])
    aiokafka = logging.getLogger("aiokafka")
    for n in range(1_200):  # a one-minute outage used to write about this many lines
        aiokafka.error("Unable connect to node with id %s: %s", n % 3, "refused")
    aiokafka.warning("Topic %s not found in cluster metadata", "t")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 6  # five of the flood, and the other kind
    first = lines[0]
    assert first["logger"] == "aiokafka" and first["level"] == "error"
    assert first["event"] == "Unable connect to node with id 0: refused"
    assert "timestamp" in first
    now[0] += 61  # a new window: the next line says how many were held back
    aiokafka.error("Unable connect to node with id %s: %s", 1, f"Bearer {TOKEN}")
    last = orjson.loads(stream.getvalue().splitlines()[-1])
    assert last["suppressed"] == 1_195
    assert TOKEN not in last["event"]  # redacted like the daemon's own lines
