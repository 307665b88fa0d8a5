"""The top-level :class:`Settings` and loading it from TOML + ``ARGBRIDGE_`` environment.

Owns: the whole configuration tree, loading (:func:`load_settings`), cross-checks
(routes name existing sinks), and turning pydantic's errors into ``key.path: message``
lines (:func:`format_errors`) that never echo an input value (it may be a secret).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from argbridge.config.arga import ArgaSourceConfig
from argbridge.config.base import ByteSize, Duration, Secret, StrictModel
from argbridge.config.cluster import ClusterConfig
from argbridge.config.profiles import (
    ArgosCIProfileConfig,
    ArgosOmniProfileConfig,
    ArgusE2EProfileConfig,
)
from argbridge.config.sinks import (
    FileSinkConfig,
    KafkaSinkConfig,
    SlackSinkConfig,
    WebhookSinkConfig,
)
from argbridge.config.sources import ReplaySourceConfig
from argbridge.config.streams import PollSourceConfig, SSESourceConfig, WebSocketSourceConfig
from argbridge.config.webhooks import ArgusWebhookSourceConfig, GenericWebhookSourceConfig
from argbridge.errors import ConfigError

SourceConfig = Annotated[
    ReplaySourceConfig
    | ArgaSourceConfig
    | ArgusWebhookSourceConfig
    | GenericWebhookSourceConfig
    | SSESourceConfig
    | WebSocketSourceConfig
    | PollSourceConfig
    | ArgusE2EProfileConfig
    | ArgosCIProfileConfig
    | ArgosOmniProfileConfig,
    Field(discriminator="type"),
]
SinkConfig = Annotated[
    FileSinkConfig | KafkaSinkConfig | SlackSinkConfig | WebhookSinkConfig,
    Field(discriminator="type"),
]
SOURCE_TYPES = (
    "replay",
    "arga",
    "argus-webhook",
    "webhook",
    "sse",
    "websocket",
    "poll",
    "argus-e2e",
    "argos-ci",
    "argos-omni",
)
SINK_TYPES = ("file", "kafka", "slack", "webhook")


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``auto``: console renderer on a TTY, JSON otherwise.
    format: Literal["auto", "json", "console"] = "auto"


class JournalConfig(StrictModel):
    #: Undelivered events (slowest sink) at which sources pause. The backlog never
    #: exceeds it by more than max(20 %, 1,000 events) (argbridge.journal.backpressure).
    max_backlog_events: int = Field(default=100_000, ge=1)
    #: Undelivered bytes at which sources pause (hard bound: + max(20 %, 1 MiB)).
    max_backlog_bytes: ByteSize = 256 * 1024 * 1024
    #: Sources resume when the backlog falls below this fraction of the caps.
    resume_ratio: float = Field(default=0.8, gt=0, lt=1)
    #: Keep delivered events this long (for ``argbridge replay``), then delete them.
    retain_delivered: Duration = 3600.0
    #: Remember ids of deleted events this long so late duplicates are still dropped.
    dedupe_window: Duration = 7 * 86400.0
    #: Writes grouped into one group commit (one synced write batch) at most.
    max_group_commit: int = Field(default=2048, ge=1)
    #: fsync commits of sink cursor acks too. Off: an ack-only commit skips its fsync (a
    #: power loss may re-deliver the batches acked since the last synced commit; a
    #: process crash loses nothing), one fsync per delivered batch less.
    fsync_acks: bool = False
    #: A small group commit holding appends waits this long for more when appends keep
    #: arriving: they share its fsync and thread round trip (journal/linger.py). An
    #: append is still answered only after its sync, up to this much later under live
    #: traffic; senders that wait for each answer stop paying it once their lingers
    #: gather nothing. 20 ms: at 400 events/s the daemon uses about half the CPU it did
    #: at 2 ms (docs/operations.md, resource bounds). 0: off.
    group_linger: Duration = Field(default=0.020, le=0.05)
    #: LevelDB's block compression of the journal's tables. Its compactions decompress
    #: and compress every event again at each level it moves through, more as the
    #: journal grows: ``none`` cost about half the compaction CPU of ``snappy`` and 2-3x
    #: its disk on JSON events (bench/bench_engine_compaction.py). Either setting reads
    #: the tables the other wrote: it can change between runs.
    compression: Literal["snappy", "none"] = "snappy"


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
    #: glibc malloc, opt-in: keep up to this much freed memory instead of returning it
    #: to the kernel, and serve allocations up to ``malloc_mmap_threshold`` from the heap
    #: (e.g. 32 MiB and 8 MiB). Before journal v2 this saved a draining sink 0.5 page
    #: faults per event (12 % of its CPU); measured again after it (2026-12-03, five
    #: interleaved ``bench_bounds --phase drain`` pairs) it saved 0-5 %, under the 5 % a
    #: tuning must buy, so the default is ``0``: glibc's own adaptive thresholds (setting
    #: one disables them, so both are set or neither). ``MALLOC_TRIM_THRESHOLD_`` or
    #: ``MALLOC_MMAP_THRESHOLD_`` in the environment win over both. No effect off glibc.
    malloc_trim_threshold: ByteSize = Field(default=0, ge=0)
    malloc_mmap_threshold: ByteSize = Field(default=0, ge=0, le=32 * 1024 * 1024)
    #: Once a backlog burst has drained (and stayed drained 5 s), collect garbage and
    #: return every free heap page to the kernel (glibc ``malloc_trim``), then again while
    #: the backlog stays small, 10 s, 20 s, 40 s later and then once a minute
    #: (argbridge.memory).
    trim_after_burst: bool = True


class HttpConfig(StrictModel):
    """The public listener: inbound webhooks (``/webhooks/*``), ``/healthz``, ``/readyz``.

    Nothing else is served here (``/metrics`` only with ``metrics.listener = "http"``):
    this is the address a reverse proxy or an ingress forwards to.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Graceful shutdown bound of open connections (every listener uses it).
    shutdown_timeout: Duration = 5.0

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "control_token" in data:
            raise ValueError(
                "control_token: moved to control.token (the control API has its own "
                "listener, [control], and is no longer served on the webhook listener)"
            )
        return data


def is_loopback_host(host: str) -> bool:
    """``host`` is ``localhost`` or a loopback IP literal (a DNS name is not trusted to be)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ControlConfig(StrictModel):
    """The control plane: ``/control/*`` (``argbridge status``, ``tail``, ``follow``,
    ``dlq``…) and, by default, ``/metrics``; never served on the webhook listener.

    Always a Unix socket (mode 0600, so only the daemon's user and root can connect; no
    token needed there); a TCP listener besides it only when ``port`` is set.
    """

    enabled: bool = True
    #: The control socket; a relative path is under ``state_dir``.
    socket: Path = Path("control.sock")
    #: TCP listener for the control API (besides the socket): unset = none; 0 = a free port.
    port: int | None = Field(default=None, ge=0, le=65535)
    host: str = "127.0.0.1"
    #: Bearer token the TCP listener requires; mandatory when ``host`` is not loopback.
    #: Without it, a loopback TCP listener refuses requests a proxy relayed (``Forwarded``,
    #: ``X-Forwarded-For``, ``X-Real-IP``).
    token: Secret | None = None

    def socket_path(self, state_dir: Path) -> Path:
        return self.socket if self.socket.is_absolute() else state_dir / self.socket


class MetricsConfig(StrictModel):
    """Where ``/metrics`` (Prometheus) is served."""

    #: ``control``: on the control listener (socket, and control TCP with its token);
    #: ``own``: a listener of its own at ``host``:``port`` for a Prometheus scraper;
    #: ``http``: on the public webhook listener too (only if you mean it); ``off``: nowhere.
    listener: Literal["control", "own", "http", "off"] = "control"
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


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
    #: Also carry argbridge's own ``argbridge.*`` events (by default they only go to
    #: the ``[ops]`` destination).
    ops: bool = False

    @field_validator("topic")
    @classmethod
    def _topic_template(cls, value: str | None) -> str | None:
        if value is not None:
            from argbridge.delivery.kafka_records import check_topic_template

            check_topic_template(value)
        return value


class OpsConfig(StrictModel):
    """Where argbridge's own events go: ``argbridge.*`` (refused credentials, refused or
    missing runs, alerts). The data routes never carry them unless a route sets
    ``ops = true``."""

    #: Sinks that receive them. Unset: every Kafka sink (on ``topic``) and every Slack
    #: sink (on its channel). ``[]``: none (they stay in the journal and the log).
    sinks: list[str] | None = None
    #: Kafka topic of argbridge's own events (a template, like a sink's ``topic``).
    topic: str = "argbridge.ops"

    @field_validator("topic")
    @classmethod
    def _topic_template(cls, value: str) -> str:
        from argbridge.delivery.kafka_records import check_topic_template

        check_topic_template(value)
        if not value.strip():
            raise ValueError("must not be empty")
        return value


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
    control: ControlConfig = ControlConfig()
    metrics: MetricsConfig = MetricsConfig()
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    sinks: dict[str, SinkConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    ops: OpsConfig = OpsConfig()
    cluster: ClusterConfig = ClusterConfig()

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
    problems: list[tuple[tuple[int | str, ...], str]] = _listener_problems(settings)
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


def _listener_problems(settings: Settings) -> list[tuple[tuple[int | str, ...], str]]:
    """The control and metrics planes are only reachable where the config says."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    control = settings.control
    if (
        control.enabled
        and control.port is not None
        and control.token is None
        and not is_loopback_host(control.host)
    ):
        problems.append(
            (
                ("control", "token"),
                f"required: the control API would listen on TCP {control.host}:{control.port}"
                " (control.host is not a loopback address) without a token; set control.token"
                " or bind control.host to 127.0.0.1",
            )
        )
    if control.enabled:
        length = len(str(control.socket_path(settings.state_dir)).encode())
        if length > UNIX_PATH_MAX:
            problems.append(
                (
                    ("control", "socket"),
                    f"the socket path is {length} bytes, over the {UNIX_PATH_MAX} a Unix socket"
                    " allows; set an absolute, shorter control.socket",
                )
            )
    listener = settings.metrics.listener
    if listener == "control" and not control.enabled:
        problems.append(
            (("metrics", "listener"), '"control" needs control.enabled = true (or use "own")')
        )
    if listener == "http" and not settings.http.enabled:
        problems.append(
            (("metrics", "listener"), '"http" needs http.enabled = true (or use "own")')
        )
    return problems


#: Longest path a Unix socket address holds (``sun_path`` is 108 bytes with the NUL).
UNIX_PATH_MAX = 107


def _route_problems(data: Any) -> list[tuple[tuple[int | str, ...], str]]:
    if not isinstance(data, dict):
        return []
    raw_sinks = data.get("sinks")
    sinks: dict[str, Any] = raw_sinks if isinstance(raw_sinks, dict) else {}
    routes = data.get("routes")
    problems: list[tuple[tuple[int | str, ...], str]] = []
    known = ", ".join(sorted(sinks)) or "none configured"
    ops = data.get("ops")
    ops_sinks = ops.get("sinks") if isinstance(ops, dict) else None
    if isinstance(ops_sinks, list):
        for j, name in enumerate(ops_sinks):
            if isinstance(name, str) and name not in sinks:
                problems.append((("ops", "sinks", j), f"no sink named {name!r} ({known})"))
    if not isinstance(routes, list):
        return problems
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
    "ControlConfig",
    "Duration",
    "FilterConfig",
    "HttpConfig",
    "JournalConfig",
    "LogConfig",
    "MetricsConfig",
    "OpsConfig",
    "RouteConfig",
    "RuntimeConfig",
    "Secret",
    "Settings",
    "SinkConfig",
    "SourceConfig",
    "format_errors",
    "load_settings",
]
