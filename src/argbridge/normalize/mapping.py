"""Declarative payload → CloudEvent mappings for the generic stream and poll sources.

Owns: compiling JMESPath expressions (https://jmespath.org, the ``jmespath`` library;
no home-made language) for the CloudEvent attributes ``id``, ``subject``, ``type``,
``time``, ``partitionkey`` and ``severity`` plus named ``data`` fields, and applying them
to one payload. Pure: no I/O. Compiling fails with :class:`MappingConfigError` naming
the attribute (so ``check-config`` reports a bad expression at its key); applying fails
with :class:`MappingError` (the caller counts and logs a rejection, never crashes).

Conversions: ``id`` → any scalar, hashed into a deterministic id by the caller;
``subject``/``partitionkey``/``type`` → a non-empty string (numbers are written out);
``time`` → an RFC 3339 string, or a number of epoch seconds (milliseconds above 1e11);
``severity`` → one of :data:`argbridge.events.SEVERITIES`. ``null`` (a missing field)
leaves the attribute to its default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.parser
import orjson

from argbridge.compat.jmespath_eval import evaluate
from argbridge.events import SEVERITIES, now_rfc3339

ATTRIBUTES = ("id", "subject", "type", "time", "partitionkey", "severity")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class MappingConfigError(ValueError):
    """An expression does not compile; the message starts with its key."""


class MappingError(ValueError):
    """A mapping cannot be applied to one payload (a counted rejection)."""

    def __init__(self, attribute: str, detail: str) -> None:
        super().__init__(f"{attribute}: {detail}")
        self.attribute = attribute


def compile_expression(key: str, expression: str) -> jmespath.parser.ParsedResult:
    """Compile one JMESPath expression; errors name ``key``, never a payload."""
    if not expression.strip():
        raise MappingConfigError(f"{key}: empty expression")
    try:
        return jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        detail = str(exc).splitlines()[0]
        raise MappingConfigError(f"{key}: invalid JMESPath expression ({detail})") from None


@dataclass(frozen=True, slots=True)
class Mapped:
    """The attributes a mapping produced (``None``: not set by the mapping)."""

    id: str | None = None
    subject: str | None = None
    type: str | None = None
    time: str | None = None
    partitionkey: str | None = None
    severity: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompiledMapping:
    """A compiled mapping; :meth:`apply` it to payloads."""

    attributes: dict[str, jmespath.parser.ParsedResult]
    data: dict[str, jmespath.parser.ParsedResult]

    @classmethod
    def compile(
        cls, attributes: Mapping[str, str | None], data: Mapping[str, str] | None = None
    ) -> CompiledMapping:
        compiled = {}
        for name, expression in attributes.items():
            if name not in ATTRIBUTES:
                raise MappingConfigError(
                    f"{name}: not a mappable attribute ({', '.join(ATTRIBUTES)})"
                )
            if expression is not None:
                compiled[name] = compile_expression(name, expression)
        fields = {
            name: compile_expression(f"data.{name}", expression)
            for name, expression in (data or {}).items()
        }
        return cls(compiled, fields)

    def apply(self, payload: Any) -> Mapped:
        """Evaluate every expression on ``payload``; raises :class:`MappingError`."""
        if not self.attributes and not self.data:
            return _NOTHING
        values: dict[str, Any] = {}
        for name, expression in self.attributes.items():
            value = _search(name, expression, payload)
            if value is not None:
                values[name] = _convert(name, value)
        data = {
            name: _search(f"data.{name}", expression, payload)
            for name, expression in self.data.items()
        }
        return Mapped(**values, data=data)


def _search(name: str, expression: jmespath.parser.ParsedResult, payload: Any) -> Any:
    try:
        return evaluate(expression, payload)
    except jmespath.exceptions.JMESPathError as exc:
        raise MappingError(name, str(exc).splitlines()[0]) from None
    except (TypeError, ValueError, ArithmeticError) as exc:  # jmespath functions on odd input
        raise MappingError(name, f"{type(exc).__name__} while evaluating") from None


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MappingError(name, f"expected a string or number, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise MappingError(name, "empty value")
    return text


def _convert(name: str, value: Any) -> str:
    if name == "time":
        return to_rfc3339(value)
    text = _text(name, value)
    if name == "severity":
        text = text.lower()
        if text not in SEVERITIES:
            raise MappingError(name, f"{text[:40]!r} is not one of {', '.join(SEVERITIES)}")
    elif name == "type" and not _TYPE.match(text):
        raise MappingError(name, f"{text[:60]!r} is not a valid event type")
    return text


def to_rfc3339(value: Any) -> str:
    """An RFC 3339 string from a string (checked) or epoch seconds / milliseconds."""
    if isinstance(value, bool):
        raise MappingError("time", "expected a timestamp, got a boolean")
    if isinstance(value, int | float):
        seconds = value / 1000.0 if value > 1e11 else float(value)
        try:
            return now_rfc3339(seconds)
        except (OverflowError, OSError, ValueError):
            raise MappingError("time", "timestamp out of range") from None
    if isinstance(value, str):
        if _RFC3339.match(value):
            return value
        if " " in value and _RFC3339.match(value.replace(" ", "T", 1)):
            return value.replace(" ", "T", 1)
        raise MappingError("time", f"{value[:40]!r} is not an RFC 3339 timestamp")
    raise MappingError("time", f"expected a timestamp, got {type(value).__name__}")


def identity_text(value: Any) -> str:
    """A stable text for an id or change-marker value (scalars as is, else JSON)."""
    if isinstance(value, str):
        return value

    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


EMPTY = CompiledMapping({}, {})
_NOTHING = Mapped()
