"""Building blocks shared by every configuration model.

Owns: :class:`StrictModel` (unknown keys are errors, models are frozen), the
:data:`Secret` type (``env:NAME``, ``file:PATH`` and ``credential:NAME`` references,
resolved at load time, never printed), :data:`Duration` (seconds, or ``"500ms"``,
``"5s"``, ``"2m"``, ``"1h"``, ``"1d"``) and :data:`ByteSize` (``"64KiB"``, ``"1MB"``…).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr


class StrictModel(BaseModel):
    """A config section: unknown keys are errors; values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class UnresolvedSecret(SecretStr):
    """A secret reference left unread (``check-config --no-environment``): checks that
    need the secret's value (e.g. that a ``whsec_`` key decodes) skip it."""

    def __init__(self, reference: str) -> None:
        super().__init__("")
        self.reference = reference


_RESOLVE: ContextVar[bool] = ContextVar("argbridge_resolve_secrets", default=True)


@contextlib.contextmanager
def unresolved_secrets() -> Iterator[None]:
    """Within the block, ``env:``/``file:``/``credential:`` references are checked for
    form only and become :class:`UnresolvedSecret` (nothing is read)."""
    token = _RESOLVE.set(False)
    try:
        yield
    finally:
        _RESOLVE.reset(token)


def resolve_secret(value: Any) -> Any:
    """Resolve ``env:NAME`` / ``file:PATH`` / ``credential:NAME`` into the secret text.

    Errors name the reference, never the secret. Plain strings are taken literally.
    Inside :func:`unresolved_secrets`, references are not read.
    """
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string (or env:NAME, file:PATH, credential:NAME)")
    if not _RESOLVE.get():
        for prefix in ("env:", "file:", "credential:"):
            if value.startswith(prefix):
                if not value[len(prefix) :]:
                    raise ValueError(f"the reference {prefix} needs a name")
                return UnresolvedSecret(value)
    if value.startswith("env:"):
        name = value[4:]
        if not name:
            raise ValueError("an env: reference needs a variable name")
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return SecretStr(os.environ[name])
    if value.startswith("file:"):
        return SecretStr(_read_secret_file(Path(value[5:])))
    if value.startswith("credential:"):
        name = value[len("credential:") :]
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ValueError(
                f"credential:{name} needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=)"
            )
        return SecretStr(_read_secret_file(Path(directory) / name))
    return SecretStr(value)


def _read_secret_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return text.rstrip("\r\n")


#: A secret string; repr/str print ``**********``; use ``.get_secret_value()`` to read it.
Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"250ms"``, ``"5s"``, ``"2h"``."""
    if isinstance(value, bool):
        raise ValueError("must be a duration (seconds, or a string like '5s', '2m')")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("must be a duration (seconds, or a string like '500ms', '5s', '2m', '1h')")


Duration = Annotated[float, BeforeValidator(parse_duration)]

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def parse_size(value: Any) -> int:
    """Bytes from an integer or a string such as ``"64KiB"``, ``"10MB"``."""
    if isinstance(value, bool):
        raise ValueError("must be a size in bytes (or a string like '64KiB')")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    raise ValueError("must be a size in bytes (or a string like '64KiB', '10MiB')")


ByteSize = Annotated[int, BeforeValidator(parse_size)]


#: ``(location within the model, message)`` of a check made on a section's raw input.
RawProblem = tuple[tuple[int | str, ...], str]


def validate_with_raw_checks(
    data: Any, handler: Callable[[Any], Any], problems: list[RawProblem]
) -> Any:
    """Run a model's validation (``handler``) and report ``problems`` (checks made on the
    raw input) together with its field errors, so one ``check-config`` run lists every
    error of a section (a model's after-validators only run once every field is valid)."""
    from pydantic import ValidationError
    from pydantic_core import InitErrorDetails, PydanticCustomError

    extra: list[InitErrorDetails] = [
        {"type": PydanticCustomError("config_check", msg), "loc": loc, "input": None}
        for loc, msg in problems
    ]
    try:
        result = handler(data)
    except ValidationError as exc:
        if not extra:
            raise
        details: list[InitErrorDetails] = [
            {"type": e["type"], "loc": e["loc"], "input": e["input"], "ctx": e.get("ctx", {})}
            for e in exc.errors()
        ]
        raise ValidationError.from_exception_data(exc.title, details + extra) from None
    if extra:
        raise ValidationError.from_exception_data("config", extra)
    return result


def supplement_field_errors(
    data: Any, handler: Callable[[Any], Any], problems: list[RawProblem]
) -> Any:
    """Like :func:`validate_with_raw_checks`, for a model that keeps its after-validator:
    ``problems`` (the same checks made on the raw input) are added only when field
    errors kept that validator from running, so nothing is reported twice."""
    from pydantic import ValidationError

    try:
        return handler(data)
    except ValidationError as exc:
        if not problems or any(not e["loc"] for e in exc.errors()):
            raise
        return validate_with_raw_checks(data, _reraise(exc), problems)


def _reraise(exc: Exception) -> Callable[[Any], Any]:
    def handler(data: Any) -> Any:
        raise exc

    return handler


def raw_duration(value: Any) -> float | None:
    """A raw duration's seconds, or ``None`` when it does not parse (its field says why)."""
    try:
        return parse_duration(value)
    except ValueError:
        return None


def raw_enabled(value: Any, default: bool = True) -> bool:
    """Whether a raw sub-table (dict or model) with an ``enabled`` flag is enabled."""
    if value is None:
        return False
    enabled = value.get("enabled", default) if isinstance(value, dict) else value
    enabled = getattr(enabled, "enabled", enabled)
    if isinstance(enabled, str):
        return enabled.strip().lower() in ("1", "true", "yes", "on")
    return bool(enabled)
