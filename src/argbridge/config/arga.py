"""Configuration of the Arga sources: validation results (SSE) and demo-runner (WebSocket).

One ``type = "arga"`` source owns an API base URL, its key, run discovery and the
stream concurrency cap for both stream kinds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from argbridge.config.base import Duration, Secret, StrictModel


class ReconnectConfig(StrictModel):
    """Backoff between reconnects (full jitter)."""

    initial: Duration = 0.5
    max: Duration = 30.0
    factor: float = Field(default=2.0, ge=1.0)


class ArgaSourceConfig(StrictModel):
    """Follows Arga validation runs (SSE results) and demo runs (WebSocket)."""

    type: Literal["arga"]
    base_url: str = "https://api.argalabs.com"
    api_key: Secret
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
