"""Configuration of the generic upstream sources: ``sse``, ``websocket`` and ``poll``.

Owns the models of those three sources and what they share: :class:`AuthConfig`
(Bearer, ``X-API-Key``, a custom header, or a query parameter for WebSockets; the
secret is always a :data:`~argbridge.config.base.Secret` reference, never printed),
:class:`MappingConfig` (JMESPath expressions for CloudEvent attributes, compiled at
load time so ``check-config`` reports a bad expression at its key) and
:class:`StartConfig` (the request that starts a run before its stream is followed,
sent once per configured run). The vendor profiles in
:mod:`argbridge.config.profiles` expand to these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from argbridge.config.arga import ReconnectConfig, WebSocketConfig
from argbridge.config.base import ByteSize, Duration, Secret, StrictModel
from argbridge.normalize.mapping import CompiledMapping, MappingConfigError, compile_expression

AuthKind = Literal["bearer", "api-key", "header", "query"]
_DEFAULT_AUTH_NAME = {
    "bearer": "Authorization",
    "api-key": "X-API-Key",
    "header": "",
    "query": "token",
}


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


class AuthConfig(StrictModel):
    """How the source proves who it is: ``type`` and the ``secret`` reference."""

    #: ``bearer``: ``Authorization: Bearer <secret>``; ``api-key``: ``X-API-Key``;
    #: ``header``: the header ``name``; ``query``: the URL parameter ``name`` (WebSocket).
    type: AuthKind
    secret: Secret
    #: Header or query parameter name (defaults: Authorization, X-API-Key, token).
    name: str | None = None

    @model_validator(mode="after")
    def _name(self) -> AuthConfig:
        if self.type == "header" and not self.name:
            raise ValueError("name: a custom header needs its name")
        return self

    @property
    def key(self) -> str:
        return self.name or _DEFAULT_AUTH_NAME[self.type]


class MappingConfig(StrictModel):
    """JMESPath expressions over the payload (https://jmespath.org) for CloudEvent
    attributes; ``null`` results leave an attribute to its default."""

    id: str | None = None
    subject: str | None = None
    type: str | None = None
    time: str | None = None
    partitionkey: str | None = None
    severity: str | None = None
    #: Named fields added to ``data`` beside ``upstream`` (e.g. ``passed = "passed"``).
    data: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _compiles(self) -> MappingConfig:
        self.compile()
        return self

    def compile(self) -> CompiledMapping:
        attributes = {
            name: getattr(self, name)
            for name in ("id", "subject", "type", "time", "partitionkey", "severity")
        }
        try:
            return CompiledMapping.compile(attributes, self.data)
        except MappingConfigError as exc:
            raise ValueError(str(exc)) from None


class StartConfig(StrictModel):
    """The request that starts a run, sent at most once per configured run (its
    ``key``), even across restarts: the response's run id is kept in the state store."""

    url: str
    method: Literal["POST", "PUT"] = "POST"
    body: dict[str, Any] = Field(default_factory=dict)
    #: JMESPath to the run id in the (JSON) response.
    run_id: str = "run_id"
    #: Names this configured run; change it (or the body) to start a new one.
    key: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("run_id")
    @classmethod
    def _expression(cls, value: str) -> str:
        try:
            compile_expression("run_id", value)
        except MappingConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class HttpSourceBase(StrictModel):
    """What the generic sources share: where, who, how to map, how to reconnect."""

    #: The upstream URL; ``{run_id}`` is replaced by the run (``run_id`` or a start).
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    auth: AuthConfig | None = None
    #: CloudEvents type stem (``<prefix><ce_type>.<event>``).
    ce_type: str = "stream"
    #: CloudEvents ``source`` (default: the URL without its query).
    ce_source: str | None = None
    mapping: MappingConfig = MappingConfig()
    #: The upstream's name in alerts ("Argus E2E refused the credentials…").
    vendor: str = "the upstream"
    #: A link shown with each event as ``data.url`` (``{run_id}`` replaced), e.g. the
    #: run's page; a mapped ``data.url`` wins.
    link: str | None = None
    #: Payloads whose JSON is larger get their largest fields replaced by size + SHA-256.
    max_event_bytes: ByteSize = Field(default=256 * 1024, ge=1024)
    reconnect: ReconnectConfig = ReconnectConfig()
    connect_timeout: Duration = 10.0

    @field_validator("ce_type")
    @classmethod
    def _type_stem(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("must be letters, digits, '.', '_' or '-'")
        return value


class GapFillConfig(StrictModel):
    """After a reconnect, GET a REST view of the run and emit what it says, so what a
    live-only stream sent while we were away is not lost (deterministic ids drop what
    was already seen)."""

    #: ``{run_id}`` is replaced by the run.
    url: str
    #: Event name of what it emits (``<ce_type>.<event>``).
    event: str = "status"
    #: JMESPath to a list in the answer: one event per element; unset: the whole answer.
    items: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("items")
    @classmethod
    def _items(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_expression("items", value)
            except MappingConfigError as exc:
                raise ValueError(str(exc).split(": ", 1)[1]) from None
        return value


class SSESourceConfig(HttpSourceBase):
    """Any ``text/event-stream``: GET, or POST with a JSON body."""

    type: Literal["sse"]
    method: Literal["GET", "POST"] = "GET"
    body: dict[str, Any] | None = None
    #: The run this stream belongs to (subject, ids, state keys); or set by ``start``.
    run_id: str | None = None
    start: StartConfig | None = None
    #: Event names (``event:``) that end the subscription, e.g. ``["complete"]``.
    terminal_events: list[str] = Field(default_factory=list)
    #: Or a JMESPath over the payload that is true on the event that ends it.
    terminal: str | None = None
    #: Catch up after a reconnect from a REST view of the run.
    gap_fill: GapFillConfig | None = None
    #: Memory bound: an event larger than this is dropped while it arrives (counted and
    #: logged as frame_too_large), before any parsing; below it, max_event_bytes applies.
    max_frame_bytes: ByteSize = Field(default=32 * 1024 * 1024, ge=1024)
    #: Must exceed the server's heartbeat interval.
    read_timeout: Duration = 60.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @model_validator(mode="after")
    def _shape(self) -> SSESourceConfig:
        if self.terminal is not None:
            compile_expression("terminal", self.terminal)
        if self.max_frame_bytes < self.max_event_bytes:
            raise ValueError("max_frame_bytes: must be at least max_event_bytes")
        if self.body is not None and self.method == "GET":
            raise ValueError("body: a GET stream has no body (method = 'POST')")
        if self.start is not None and self.run_id is not None:
            raise ValueError("run_id: set either run_id (stream a known run) or start")
        if "{run_id}" in self.url + str(self.body or "") and not (self.run_id or self.start):
            raise ValueError("url: {run_id} needs run_id or start")
        return self


class WebSocketSourceConfig(HttpSourceBase):
    """Any WebSocket feed of JSON messages; one message, one event."""

    type: Literal["websocket"]
    run_id: str | None = None
    #: JMESPath naming the message's event (``type`` part); default ``message``.
    event: str | None = None
    #: JMESPath that is true on the message that ends the subscription.
    terminal: str | None = None
    websocket: WebSocketConfig = WebSocketConfig()

    @field_validator("url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    @field_validator("event", "terminal")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_expression("expression", value)
            except MappingConfigError as exc:
                raise ValueError(str(exc).split(": ", 1)[1]) from None
        return value


class PaginationConfig(StrictModel):
    """How the list endpoint pages: ``page`` (page + size), ``offset`` (offset +
    limit), ``cursor`` (a cursor from the response), or ``none``."""

    style: Literal["page", "offset", "cursor", "none"] = "page"
    #: Items per request (Argos Omni: 50).
    size: int = Field(default=50, ge=1, le=10_000)
    #: Query parameter names.
    page_param: str = "page"
    size_param: str = "size"
    offset_param: str = "offset"
    limit_param: str = "limit"
    cursor_param: str = "cursor"
    first_page: int = Field(default=1, ge=0)
    #: JMESPath to the next cursor (``cursor`` style); null ends the listing.
    next_cursor: str = "next_cursor"
    #: Requests per poll at most (a runaway listing cannot loop forever).
    max_pages: int = Field(default=100, ge=1)


class PollSourceConfig(HttpSourceBase):
    """GET a list endpoint on an interval; one event per new or changed item."""

    type: Literal["poll"]
    interval: Duration = 30.0
    #: Extra query parameters of every request.
    params: dict[str, str] = Field(default_factory=dict)
    pagination: PaginationConfig = PaginationConfig()
    #: JMESPath to the list of items in a response (``@``: the response is the list).
    items: str = "items"
    #: JMESPath to an item's id.
    item_id: str = "id"
    #: JMESPath to what changes when the item changes (``status``, ``updated_at``…).
    change_marker: str = "updated_at"
    #: Re-read a listing that changed while it was paged, at most this many times.
    consistency_retries: int = Field(default=3, ge=0, le=20)
    read_timeout: Duration = 30.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @model_validator(mode="after")
    def _expressions(self) -> PollSourceConfig:
        for key in ("items", "item_id", "change_marker"):
            compile_expression(key, getattr(self, key))
        compile_expression("pagination.next_cursor", self.pagination.next_cursor)
        return self
