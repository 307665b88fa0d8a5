"""The top-level :class:`Settings` and loading it from TOML + ``ARGBRIDGE_`` environment.

Owns: the whole configuration tree, loading (:func:`load_settings`), cross-checks
(routes name existing sinks), and turning pydantic's errors into ``key.path: message``
lines (:func:`format_errors`) that never echo an input value (it may be a secret).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ModelWrapValidatorHandler, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from argbridge.config.arga import ArgaSourceConfig
from argbridge.config.base import ByteSize, Duration, Secret, StrictModel
from argbridge.config.sinks import (
    FileSinkConfig,
    KafkaSinkConfig,
    SlackSinkConfig,
    WebhookSinkConfig,
)
from argbridge.config.sources import ReplaySourceConfig
from argbridge.config.webhooks import ArgusWebhookSourceConfig, GenericWebhookSourceConfig
from argbridge.errors import ConfigError

SourceConfig = Annotated[
    ReplaySourceConfig | ArgaSourceConfig | ArgusWebhookSourceConfig | GenericWebhookSourceConfig,
    Field(discriminator="type"),
]
SinkConfig = Annotated[
    FileSinkConfig | KafkaSinkConfig | SlackSinkConfig | WebhookSinkConfig,
    Field(discriminator="type"),
]
SOURCE_TYPES = ("replay", "arga", "argus-webhook", "webhook")
SINK_TYPES = ("file", "kafka", "slack", "webhook")


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``auto``: console renderer on a TTY, JSON otherwise.
    format: Literal["auto", "json", "console"] = "auto"


class JournalConfig(StrictModel):
    #: Undelivered events (slowest sink) at which sources pause. The backlog never
    #: exceeds it by more than max(20 %, 1,000 events) (argbridge.backpressure).
    max_backlog_events: int = Field(default=100_000, ge=1)
    #: Undelivered bytes at which sources pause (hard bound: + max(20 %, 1 MiB)).
    max_backlog_bytes: ByteSize = 256 * 1024 * 1024
    #: Sources resume when the backlog falls below this fraction of the caps.
    resume_ratio: float = Field(default=0.8, gt=0, lt=1)
    #: Keep delivered events this long (for ``argbridge replay``), then delete them.
    retain_delivered: Duration = 3600.0
    #: Remember ids of deleted events this long so late duplicates are still dropped.
    dedupe_window: Duration = 7 * 86400.0
    #: Appends grouped into one transaction at most.
    max_group_commit: int = Field(default=2048, ge=1)
    #: fsync commits of sink cursor acks too. Off: an ack-only commit skips its fsync (a
    #: power loss may re-deliver the batches acked since the last synced commit; a
    #: process crash loses nothing), one fsync per delivered batch less.
    fsync_acks: bool = False


class RuntimeConfig(StrictModel):
    #: On SIGTERM/SIGINT, wait this long for in-flight deliveries.
    drain_timeout: Duration = 10.0
    restart_initial: Duration = 0.5
    restart_max: Duration = 30.0
    #: Use uvloop when installed.
    uvloop: bool = True
    #: The garbage collector's generation thresholds (``gc.set_threshold``); the default
    #: is Python's own. Raising the first trades pauses for throughput: while a sink drains
    #: a backlog, Python's thresholds run ~570 collections per 200k events delivered to
    #: Kafka (0.75 µs per event, 4% of the sink's CPU, measured with ``gc.callbacks``);
    #: ``[50000, 20, 10]`` runs almost none, but one young collection then took 51 ms
    #: (Python's longest: 0.7 ms), a pause the commit → ack latency target cannot absorb.
    gc_thresholds: tuple[
        Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]
    ] = (700, 10, 10)
    #: glibc malloc: keep up to this much freed memory instead of returning it to the
    #: kernel, and serve allocations up to ``malloc_mmap_threshold`` from the heap. With
    #: glibc's defaults a sink draining a backlog (MiB-sized batches and requests, freed
    #: and made again) took 0.5 page faults per event, ~1 µs of the Kafka sink's ~16.
    #: ``0`` in either leaves glibc's own adaptive thresholds (setting one disables them,
    #: so both are set or neither); ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_MMAP_THRESHOLD_``
    #: in the environment win over both. No effect off glibc.
    malloc_trim_threshold: ByteSize = Field(default=32 * 1024 * 1024, ge=0)
    malloc_mmap_threshold: ByteSize = Field(default=8 * 1024 * 1024, ge=0, le=32 * 1024 * 1024)
    #: Once a backlog burst has drained (and stayed drained 5 s), collect garbage and
    #: return every free heap page to the kernel (glibc ``malloc_trim``; argbridge.memory).
    trim_after_burst: bool = True


class HttpConfig(StrictModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Bearer token for the control API (``argbridge follow``, ``dlq``…); unset = loopback only.
    control_token: Secret | None = None
    shutdown_timeout: Duration = 5.0


class FilterConfig(StrictModel):
    """One CloudEvents subscription filter; exactly one dialect per filter."""

    exact: dict[str, str] | None = None
    prefix: dict[str, str] | None = None
    suffix: dict[str, str] | None = None
    all: list[FilterConfig] | None = None
    any: list[FilterConfig] | None = None
    not_: FilterConfig | None = Field(default=None, alias="not")

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _one_dialect(self) -> FilterConfig:
        set_ = [
            name
            for name in ("exact", "prefix", "suffix", "all", "any", "not_")
            if getattr(self, name) is not None
        ]
        if len(set_) != 1:
            raise ValueError(
                "a filter needs exactly one of exact, prefix, suffix, all, any, not"
                f" (got {len(set_)})"
            )
        return self


class RouteConfig(StrictModel):
    name: str | None = None
    #: Sink names this route delivers to.
    sinks: list[str] = Field(min_length=1)
    #: All must match (empty: every event).
    filters: list[FilterConfig] = Field(default_factory=list)
    #: Topic override for topic-based sinks (Kafka); may use ``{type}`` etc.
    topic: str | None = None


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="ARGBRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    state_dir: Path = Path("./var")
    #: Name of this instance in event sources and logs.
    instance: str = "argbridge"
    #: Prefix of every CloudEvents ``type`` argbridge emits (``arga.``/``argus.`` by default).
    type_prefix: str = ""
    log: LogConfig = LogConfig()
    journal: JournalConfig = JournalConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    http: HttpConfig = HttpConfig()
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    sinks: dict[str, SinkConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the file (passed as init kwargs); no .env, no secrets dir.
        return (env_settings, init_settings)

    @model_validator(mode="wrap")
    @classmethod
    def _cross_check(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        # Checked on the raw input so a bad route is reported together with every other error.
        problems = _route_problems(data)
        try:
            settings = handler(data)
        except ValidationError as exc:
            if not problems:
                raise
            details: list[InitErrorDetails] = [
                {"type": e["type"], "loc": e["loc"], "input": e["input"], "ctx": e.get("ctx", {})}
                for e in exc.errors()
            ]
            raise ValidationError.from_exception_data(
                exc.title, details + _problem_details(problems)
            ) from None
        problems += _cross_check_sources(settings)
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, _problem_details(problems))
        return settings


def _cross_check_sources(settings: Settings) -> list[tuple[tuple[int | str, ...], str]]:
    """Checks across sections that need validated values."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    window = settings.journal.dedupe_window
    for name, source in settings.sources.items():
        if source.type not in ("argus-webhook", "webhook"):
            continue
        if not settings.http.enabled:
            problems.append((("sources", name), "webhook sources need http.enabled = true"))
        if window < 2 * source.tolerance:
            problems.append(
                (
                    ("sources", name, "tolerance"),
                    "replay protection needs journal.dedupe_window >= 2 x tolerance "
                    f"({window:g}s < 2 x {source.tolerance:g}s)",
                )
            )
    return problems


def _route_problems(data: Any) -> list[tuple[tuple[int | str, ...], str]]:
    if not isinstance(data, dict):
        return []
    raw_sinks = data.get("sinks")
    sinks: dict[str, Any] = raw_sinks if isinstance(raw_sinks, dict) else {}
    routes = data.get("routes")
    problems: list[tuple[tuple[int | str, ...], str]] = []
    if not isinstance(routes, list):
        return problems
    known = ", ".join(sorted(sinks)) or "none configured"
    for i, route in enumerate(routes):
        names = route.get("sinks") if isinstance(route, dict) else None
        if not isinstance(names, list):
            continue
        for j, name in enumerate(names):
            if isinstance(name, str) and name not in sinks:
                problems.append((("routes", i, "sinks", j), f"no sink named {name!r} ({known})"))
    return problems


def _problem_details(problems: list[tuple[tuple[int | str, ...], str]]) -> list[InitErrorDetails]:
    return [
        {"type": PydanticCustomError("unknown_sink", msg), "loc": loc, "input": None}
        for loc, msg in problems
    ]


def _find_tag(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop the discriminator tag pydantic inserts.

    ``sinks.kafka.kafka.acks`` → ``sinks.kafka.acks``.
    """
    out = list(loc)
    if len(out) >= 3 and out[0] in ("sources", "sinks") and out[2] in (SOURCE_TYPES + SINK_TYPES):
        del out[2]
    return tuple(out)


def _message(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {expected}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown type {ctx.get('tag')!r}; must be one of {expected}"
    if kind == "union_tag_not_found":
        return "needs a 'type' key"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg


#: A model-level validator names the offending field as ``field.path: message``.
_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*): (.+)$", re.S)


def format_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """``(key.path, message)`` for every error; input values are never included."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = _find_tag(tuple(err["loc"]))
        msg = _message(err)
        match = _FIELD_PREFIX.match(msg) if err["type"] == "value_error" else None
        if match:
            loc = (*loc, *match.group(1).split("."))
            msg = match.group(2)
        problems.append((".".join(str(p) for p in loc), msg))
    return problems


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Load the TOML file (if any), apply ``ARGBRIDGE_*`` env overrides, validate.

    Raises :class:`ConfigError` listing every problem with its key path.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError([("", f"config file {p} does not exist")]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([("", f"{p} is not valid TOML: {exc}")]) from None
        except OSError as exc:
            raise ConfigError([("", f"cannot read {p}: {exc.strerror}")]) from None
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from None


__all__ = [
    "ByteSize",
    "Duration",
    "FilterConfig",
    "HttpConfig",
    "JournalConfig",
    "LogConfig",
    "RouteConfig",
    "RuntimeConfig",
    "Secret",
    "Settings",
    "SinkConfig",
    "SourceConfig",
    "format_errors",
    "load_settings",
]
