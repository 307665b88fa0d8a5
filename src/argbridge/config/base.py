"""Building blocks shared by every configuration model.

Owns: :class:`StrictModel` (unknown keys are errors, models are frozen), the
:data:`Secret` type (``env:NAME``, ``file:PATH`` and ``credential:NAME`` references,
resolved at load time, never printed), :data:`Duration` (seconds, or ``"500ms"``,
``"5s"``, ``"2m"``, ``"1h"``, ``"1d"``) and :data:`ByteSize` (``"64KiB"``, ``"1MB"``…).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr


class StrictModel(BaseModel):
    """A config section: unknown keys are errors; values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def resolve_secret(value: Any) -> Any:
    """Resolve ``env:NAME`` / ``file:PATH`` / ``credential:NAME`` into the secret text.

    Errors name the reference, never the secret. Plain strings are taken literally.
    """
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string (or env:NAME, file:PATH, credential:NAME)")
    if value.startswith("env:"):
        name = value[4:]
        if not name:
            raise ValueError("env: reference needs a variable name")
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
