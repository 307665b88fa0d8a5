"""HTTP plumbing shared by the generic ``sse``, ``websocket`` and ``poll`` sources.

Owns: turning an :class:`~argbridge.config.streams.AuthConfig` into headers or query
parameters (the secret is registered with the log redactor first, so it never reaches
a log line even inside a URL), the URL of a run (``{run_id}``), a log-safe form of a
URL (no query string), the httpx client every generic source uses (no proxies from
the environment, explicit timeouts), and :class:`StartOnce`, which sends a run's start
request at most once per configured run, even across restarts.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import orjson

from argbridge.config.streams import AuthConfig, StartConfig
from argbridge.logging import register_secret
from argbridge.normalize.mapping import MappingError, compile_expression
from argbridge.sources.state import StateStore


def auth_headers(auth: AuthConfig | None) -> dict[str, str]:
    """Headers carrying the credential (none for ``query`` auth)."""
    if auth is None or auth.type == "query":
        return {}
    secret = auth.secret.get_secret_value()
    register_secret(secret)
    if auth.type == "bearer":
        return {auth.key: f"Bearer {secret}"}
    return {auth.key: secret}


def auth_params(auth: AuthConfig | None) -> dict[str, str]:
    """Query parameters carrying the credential (``query`` auth only)."""
    if auth is None or auth.type != "query":
        return {}
    secret = auth.secret.get_secret_value()
    register_secret(secret)
    return {auth.key: secret}


def with_run(template: str, run_id: str) -> str:
    """``template`` with ``{run_id}`` replaced (URL-quoted)."""
    return template.replace("{run_id}", quote(run_id, safe=""))


def fill_run(value: Any, run_id: str) -> Any:
    """A JSON body with every ``"{run_id}"`` in its strings replaced (not quoted)."""
    if isinstance(value, str):
        return value.replace("{run_id}", run_id)
    if isinstance(value, dict):
        return {k: fill_run(v, run_id) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_run(v, run_id) for v in value]
    return value


def safe_url(url: str) -> str:
    """``url`` without query and fragment (what logs and event sources may show)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def client(
    headers: dict[str, str], *, connect: float, read: float, max_connections: int = 4
) -> httpx.AsyncClient:
    """The httpx client of one generic source."""
    return httpx.AsyncClient(
        headers={"user-agent": "argbridge", **headers},
        timeout=httpx.Timeout(connect=connect, read=read, write=30.0, pool=None),
        trust_env=False,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=2),
    )


_PENDING = orjson.dumps({"pending": True}).decode()


class StartError(Exception):
    """A start request failed; ``reason`` is a stable token, ``retry`` says whether a
    later attempt may send it again (nothing reached the upstream)."""

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        retry: bool,
        status: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry = retry
        #: The upstream's ``Retry-After`` when it asked to wait.
        self.retry_after = retry_after


class StartOnce:
    """Sends the start request of one configured run at most once, ever.

    ``pending`` is stored *before* the request goes out and the run id after the
    response: a crash in between leaves ``pending``, and a restart then refuses to
    send again (``start_unknown``) instead of starting the run twice; the operator
    names the run (``run_id``) or changes the start ``key``. The request carries an
    ``Idempotency-Key`` derived from the configured run as well.
    """

    def __init__(self, source: str, config: StartConfig, state: StateStore) -> None:
        self.config = config
        self.state = state
        body = orjson.dumps(config.body, option=orjson.OPT_SORT_KEYS)
        fingerprint = (
            config.key or hashlib.sha256(config.url.encode() + b"\n" + body).hexdigest()[:32]
        )
        self.state_key = f"start:{source}:{fingerprint}"
        self.idempotency_key = hashlib.sha256(self.state_key.encode()).hexdigest()[:40]
        self._run_id = compile_expression("start.run_id", config.run_id)

    async def stored(self) -> str | None:
        """The run id of an earlier start (``None``: never started)."""
        raw = await self.state.get_state(self.state_key)
        if raw is None:
            return None
        value = orjson.loads(raw)
        if value.get("run_id"):
            return str(value["run_id"])
        if not value.get("pending"):
            return None
        raise StartError(
            "start_unknown",
            "a start request was sent but its answer was never recorded; set run_id "
            "to follow that run, or change start.key to start a new one",
            retry=False,
        )

    async def run_id(self, http: httpx.AsyncClient) -> str:
        """The run id: the stored one, else the answer of one start request."""
        known = await self.stored()
        if known is not None:
            return known
        await self.state.set_state(self.state_key, _PENDING)
        try:
            response = await http.request(
                self.config.method,
                self.config.url,
                json=self.config.body,
                headers={"idempotency-key": self.idempotency_key},
            )
        except httpx.ConnectError as exc:
            # Nothing reached the server: a later attempt may send it.
            await self._forget()
            raise StartError("start_unreachable", type(exc).__name__, retry=True) from None
        except httpx.TransportError as exc:
            raise StartError("start_unknown", type(exc).__name__, retry=False) from None
        status = response.status_code
        if status in (408, 425, 429, 503):
            # Refused before it was processed (rate limit, outage): safe to send again.
            await self._forget()
            raise StartError(
                f"http_{status}",
                "start refused for now",
                retry=True,
                status=status,
                retry_after=response.headers.get("retry-after"),
            )
        if status >= 500:
            # The run may or may not exist now: never guess by sending it again.
            raise StartError("start_unknown", f"HTTP {status}", retry=False)
        if status not in (200, 201, 202):
            await self._forget()
            raise StartError(
                "auth_failed" if response.status_code in (401, 403) else "start_refused",
                f"HTTP {response.status_code}",
                retry=False,
            )
        try:
            run_id = self._run_id.search(response.json())
        except (ValueError, MappingError):
            run_id = None
        if not isinstance(run_id, str | int) or isinstance(run_id, bool) or run_id == "":
            raise StartError("start_no_run_id", "the start answer has no run id", retry=False)
        await self.state.set_state(self.state_key, orjson.dumps({"run_id": str(run_id)}).decode())
        return str(run_id)

    async def _forget(self) -> None:
        await self.state.set_state(self.state_key, orjson.dumps({}).decode())
