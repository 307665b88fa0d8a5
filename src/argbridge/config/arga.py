"""Configuration of the Arga sources: validation results (SSE) and demo-runner (WebSocket).

One ``type = "arga"`` source owns an API base URL, its key, run discovery, the stream
concurrency cap for both stream kinds, the reconnect policy and the WebSocket limits.
``simulate`` serves the source from the in-process Arga simulator on loopback (the
embedded default of ``make run``: real HTTP/SSE/WebSocket, no credentials needed).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ModelWrapValidatorHandler, field_validator, model_validator

from argbridge.config.base import (
    ByteSize,
    Duration,
    RawProblem,
    Secret,
    StrictModel,
    raw_duration,
    raw_enabled,
    supplement_field_errors,
    validate_with_raw_checks,
)


class ReconnectConfig(StrictModel):
    """Backoff between reconnects (full jitter)."""

    initial: Duration = 0.5
    max: Duration = 30.0
    factor: float = Field(default=2.0, ge=1.0)


class WebSocketConfig(StrictModel):
    """Limits of the demo-runner WebSocket client (websockets library)."""

    #: Keepalive ping every this long (0 = off; not recommended).
    ping_interval: Duration = 20.0
    ping_timeout: Duration = 20.0
    #: Largest message accepted (bigger → close 1009, then reconnect).
    max_size: ByteSize = 1024 * 1024
    #: Messages buffered before the client stops reading the socket (TCP backpressure).
    max_queue: int = Field(default=16, ge=1)
    #: Negotiate permessage-deflate (costs ~64 KiB per connection).
    compression: bool = False
    open_timeout: Duration = 10.0
    close_timeout: Duration = 5.0


class ArgaSimulateConfig(StrictModel):
    """The in-process Arga simulator (real HTTP/SSE/WebSocket on 127.0.0.1)."""

    enabled: bool = True
    #: One simulated event per tick and run.
    tick: Duration = 0.5
    #: Steps per simulated validation run.
    steps: int = Field(default=4, ge=1)
    #: Start new runs forever (else one validation run and one demo run).
    loop: bool = True
    #: Heartbeat comment interval on idle SSE streams.
    heartbeat: Duration = 15.0


TIMEOUT_HEARTBEAT = "read_timeout must exceed simulate.heartbeat (idle streams)"


class ArgaSourceConfig(StrictModel):
    """Follows Arga validation runs (SSE results) and demo runs (WebSocket)."""

    type: Literal["arga"]
    base_url: str = "https://api.argalabs.com"
    #: API key (``arga_sk_…``) or JWT; required unless ``simulate`` is enabled.
    api_key: Secret | None = None
    #: Validation run ids to follow from start-up.
    runs: list[str] = Field(default_factory=list)
    #: Demo-runner run ids to follow from start-up.
    demo_runs: list[str] = Field(default_factory=list)
    #: Poll the run listings for non-terminal runs (0 = no polling).
    poll_interval: Duration = 30.0
    discover_validation: bool = True
    discover_demo: bool = True
    #: Open streams at most (the vendor documents 10 concurrent streams).
    max_streams: int = Field(default=10, ge=1)
    reconnect: ReconnectConfig = ReconnectConfig()
    #: Read timeout; must exceed the server's heartbeat interval.
    read_timeout: Duration = 60.0
    connect_timeout: Duration = 10.0
    websocket: WebSocketConfig = WebSocketConfig()
    #: Serve this source from the in-process simulator instead of ``base_url``.
    simulate: ArgaSimulateConfig | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _key_or_simulator(
        cls, data: Any, handler: ModelWrapValidatorHandler[ArgaSourceConfig]
    ) -> ArgaSourceConfig:
        # Checked on the raw input, so it is reported along with every field error.
        problems: list[RawProblem] = []
        if (
            isinstance(data, dict)
            and data.get("api_key") is None
            and not raw_enabled(data.get("simulate"))
        ):
            problems.append((("api_key",), "required unless simulate.enabled is true"))
        result: ArgaSourceConfig = validate_with_raw_checks(data, handler, problems)
        return result

    @model_validator(mode="wrap")
    @classmethod
    def _raw_timeouts(cls, data: Any, handler: ModelWrapValidatorHandler[ArgaSourceConfig]) -> Any:
        # The check of _timeouts on the raw input, reported along with field errors.
        problems: list[RawProblem] = []
        sim = data.get("simulate") if isinstance(data, dict) else None
        if isinstance(sim, dict):
            read = raw_duration(data.get("read_timeout", 60.0))
            beat = raw_duration(sim.get("heartbeat", 15.0))
            if read is not None and beat is not None and read <= beat:
                problems.append(((), TIMEOUT_HEARTBEAT))
        return supplement_field_errors(data, handler, problems)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _timeouts(self) -> ArgaSourceConfig:
        if self.simulate is not None and self.read_timeout <= self.simulate.heartbeat:
            raise ValueError(TIMEOUT_HEARTBEAT)
        return self

    @property
    def simulated(self) -> bool:
        return self.simulate is not None and self.simulate.enabled


StreamKind = Literal["validation", "demo"]
