"""Vendor profiles: a few lines of config that expand to the generic sources.

Owns the models of ``argus-e2e``, ``argos-ci`` and ``argos-omni`` and their
:meth:`expand` into :mod:`argbridge.config.streams` models (the registry builds the
generic sources from those; a profile of several listings runs them as one source).
The shapes come from ``../shared/reference/`` (argus-e2e-api.txt, argos-ci-api.txt,
argos-omni-api.txt); where the references are silent (paths of the E2E endpoints,
build and item fields) the defaults are configurable and the mappings liberal, and the
raw payload is always kept under ``data.upstream``.

- ``argus-e2e``: start a test run (``POST start_path`` with project and tests, sent at
  most once per configured run, even across restarts) and stream it, or stream a
  known ``run_id``: ``POST stream_path`` answers SSE with ``state_update``, ``log``,
  ``screenshot`` and ``complete`` → ``argus.e2e.<event>``; ``complete`` ends it, with
  ``passed``/``failed`` in ``data``; after a reconnect the run's status
  (``status_path``) → ``argus.e2e.status``; auth ``X-API-Key`` or a JWT (Bearer).
- ``argos-ci``: the project's builds (bearer project token), one event per build
  status change → ``argos.ci.build.<status>``.
- ``argos-omni``: the items and analyses of a workflow (``x-api-key``, page/size with
  50 per page), one event per status change → ``argos.omni.item.<status>`` and
  ``argos.omni.analysis.<status>``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from argbridge.config.arga import ReconnectConfig
from argbridge.config.base import ByteSize, Duration, Secret, StrictModel
from argbridge.config.streams import PollSourceConfig, SSESourceConfig

#: Statuses that make an event red (severity ``high``) in the CI/Omni profiles.
_FAILED = "['error', 'failure', 'failed', 'rejected', 'aborted', 'expired', 'timeout']"


OmniKind = Literal["items", "analyses"]
OMNI_KINDS: tuple[OmniKind, ...] = ("items", "analyses")


def _url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def _check_base(value: str) -> None:
    if not value.startswith(("http://", "https://")):
        raise ValueError("base_url: must start with http:// or https://")


def _check_expansion(profile: Any) -> None:
    """Expand at load time, so ``check-config`` reports what the daemon would refuse."""
    try:
        profile.expand("check")
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        where = f"{where}: " if where else ""
        raise ValueError(f"expands to an invalid source: {where}{msg}") from None


class ArgusE2EStart(StrictModel):
    """The test run to start (``POST start_path``)."""

    project_id: str
    test_ids: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    #: Names this configured run; change it to start another run with the same body.
    key: str | None = None


class ArgusE2EProfileConfig(StrictModel):
    """Argus E2E test runs streamed as SSE (``argus-e2e-api.txt``)."""

    type: Literal["argus-e2e"]
    base_url: str = "https://api.argus.io"
    #: ``X-API-Key`` (recommended for CI); or ``jwt`` (Authorization: Bearer).
    api_key: Secret | None = None
    jwt: Secret | None = None
    #: Stream this known run …
    run_id: str | None = None
    #: … or start one (at most once) and stream it.
    start: ArgusE2EStart | None = None
    start_path: str = "/api/v1/tests/run"
    #: POSTed with ``{"run_id": …}``; answers ``text/event-stream``.
    stream_path: str = "/api/v1/stream/test"
    #: After a reconnect, GET the run's status here (``{run_id}`` replaced) and emit it
    #: as ``argus.e2e.status`` (progress counts), so a drop loses nothing; "" = off.
    status_path: str = "/api/v1/tests/{run_id}"
    #: The run's page, shown with every event (``{run_id}`` replaced).
    run_url: str | None = "https://app.argus.io/runs/{run_id}"
    #: Screenshots arrive as base64: bigger events get them replaced by size + SHA-256.
    max_event_bytes: ByteSize = Field(default=256 * 1024, ge=1024)
    reconnect: ReconnectConfig = ReconnectConfig()
    read_timeout: Duration = 60.0

    @model_validator(mode="after")
    def _shape(self) -> ArgusE2EProfileConfig:
        _check_base(self.base_url)
        if (self.api_key is None) == (self.jwt is None):
            raise ValueError("api_key: set exactly one of api_key or jwt")
        if (self.run_id is None) == (self.start is None):
            raise ValueError("run_id: set exactly one of run_id (a known run) or start")
        _check_expansion(self)
        return self

    def expand(self, name: str) -> dict[str, SSESourceConfig]:
        auth: dict[str, Any] = (
            {"type": "api-key", "secret": self.api_key}
            if self.api_key is not None
            else {"type": "bearer", "secret": self.jwt}
        )
        start = None
        if self.start is not None:
            body: dict[str, Any] = {
                "project_id": self.start.project_id,
                "test_ids": self.start.test_ids,
            }
            if self.start.options:
                body["options"] = self.start.options
            start = {
                "url": _url(self.base_url, self.start_path),
                "body": body,
                "run_id": "run_id",
                "key": self.start.key,
            }
        cfg = SSESourceConfig.model_validate(
            {
                "type": "sse",
                "url": _url(self.base_url, self.stream_path),
                "method": "POST",
                "body": {"run_id": "{run_id}"},
                "auth": auth,
                "run_id": self.run_id,
                "start": start,
                "ce_type": "argus.e2e",
                "ce_source": _url(self.base_url, self.stream_path),
                "vendor": "Argus E2E",
                "link": self.run_url,
                "terminal_events": ["complete"],
                "gap_fill": (
                    {"url": _url(self.base_url, self.status_path), "event": "status"}
                    if self.status_path
                    else None
                ),
                "max_event_bytes": self.max_event_bytes,
                "max_frame_bytes": max(self.max_event_bytes, 32 * 1024 * 1024),
                "reconnect": self.reconnect,
                "read_timeout": self.read_timeout,
                "mapping": {
                    "severity": "(failed > `0` || status == 'failed' || status == 'error')"
                    " && 'high' || null",
                    "data": {
                        "status": "status",
                        "passed": "passed || progress.passed",
                        "failed": "failed || progress.failed",
                        "duration_seconds": "duration_seconds",
                        "current_test": "current_test",
                        "message": "message",
                        "step": "step",
                    },
                },
            }
        )
        return {name: cfg}


class ArgosCIProfileConfig(StrictModel):
    """Argos CI builds of the token's project (``argos-ci-api.txt``)."""

    type: Literal["argos-ci"]
    base_url: str = "https://api.argos-ci.com/v2"
    #: Project token (``Authorization: Bearer``).
    token: Secret
    path: str = "/project/builds"
    interval: Duration = 30.0
    per_page: int = Field(default=30, ge=1, le=100)
    reconnect: ReconnectConfig = ReconnectConfig(initial=1.0, max=300.0)

    @model_validator(mode="after")
    def _shape(self) -> ArgosCIProfileConfig:
        _check_base(self.base_url)
        _check_expansion(self)
        return self

    def expand(self, name: str) -> dict[str, PollSourceConfig]:
        cfg = PollSourceConfig.model_validate(
            {
                "type": "poll",
                "url": _url(self.base_url, self.path),
                "auth": {"type": "bearer", "secret": self.token},
                "interval": self.interval,
                "pagination": {
                    "style": "page",
                    "size": self.per_page,
                    "size_param": "perPage",
                },
                "items": "results || builds || data || items",
                "item_id": "id",
                "change_marker": "[status, conclusion]",
                "ce_type": "argos.ci.build",
                "vendor": "Argos CI",
                "reconnect": self.reconnect,
                "mapping": {
                    "type": "join('.', ['argos.ci.build', conclusion || status || 'unknown'])",
                    "subject": "to_string(id)",
                    "time": "updatedAt || updated_at || createdAt || created_at",
                    "severity": f"contains({_FAILED}, conclusion || status) && 'high' || null",
                    "data": {
                        "number": "number",
                        "name": "name",
                        "status": "status",
                        "conclusion": "conclusion",
                        "url": "url",
                        "commit": "head.sha || commit",
                        "branch": "head.branch || branch",
                    },
                },
            }
        )
        return {name: cfg}


class ArgosOmniProfileConfig(StrictModel):
    """Argos Omni items and analyses of one workflow (``argos-omni-api.txt``)."""

    type: Literal["argos-omni"]
    base_url: str = "https://client-omni-api.argosidentity.com/v1"
    #: ``x-api-key``.
    api_key: Secret
    workflow_id: str = Field(min_length=1)
    include: list[OmniKind] = Field(default_factory=lambda: list(OMNI_KINDS), min_length=1)
    items_path: str = "/workflows/{workflow_id}/items"
    analyses_path: str = "/workflows/{workflow_id}/analyses"
    interval: Duration = 30.0
    #: The API's page size (50 per page).
    page_size: int = Field(default=50, ge=1, le=50)
    reconnect: ReconnectConfig = ReconnectConfig(initial=1.0, max=300.0)

    @model_validator(mode="after")
    def _shape(self) -> ArgosOmniProfileConfig:
        _check_base(self.base_url)
        if "/" in self.workflow_id:
            raise ValueError("workflow_id: must be one path segment")
        _check_expansion(self)
        return self

    def expand(self, name: str) -> dict[str, PollSourceConfig]:
        out = {}
        for kind in self.include:
            singular = "item" if kind == "items" else "analysis"
            path = (self.items_path if kind == "items" else self.analyses_path).replace(
                "{workflow_id}", self.workflow_id
            )
            out[f"{name}.{kind}"] = PollSourceConfig.model_validate(
                {
                    "type": "poll",
                    "url": _url(self.base_url, path),
                    "auth": {"type": "header", "name": "x-api-key", "secret": self.api_key},
                    "interval": self.interval,
                    "pagination": {"style": "page", "size": self.page_size},
                    "items": "data.items || data.content || data.list || data || items",
                    "item_id": "id || itemId || analysisId",
                    "change_marker": "[status, updatedAt || updated_at]",
                    "ce_type": f"argos.omni.{singular}",
                    "vendor": "Argos Omni",
                    "reconnect": self.reconnect,
                    "mapping": {
                        "type": f"join('.', ['argos.omni.{singular}', status || 'unknown'])",
                        "subject": "to_string(id || itemId || analysisId)",
                        "partitionkey": "'{}'".format(self.workflow_id.replace("'", "\\'")),
                        "time": "updatedAt || updated_at || createdAt || created_at",
                        "severity": f"contains({_FAILED}, status) && 'high' || null",
                        "data": {
                            "status": "status",
                            "name": "name || fileName || title",
                            "folder_id": "folderId || folder_id",
                            "profile_id": "profileId || profile_id",
                            "item": "itemId || item_id",
                        },
                    },
                }
            )
        return out


ProfileConfig = ArgusE2EProfileConfig | ArgosCIProfileConfig | ArgosOmniProfileConfig
