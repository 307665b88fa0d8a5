"""The control API's router and who may use it (:class:`ControlAccess`).

The control API (``/control/...``) is only ever served on the control listener (the
state dir's Unix socket, and a TCP address when ``control.port`` is set), never on the
webhook listener. Access, checked once per request before any route runs:

- TCP with ``control.token``: ``Authorization: Bearer <token>`` (constant-time compare),
  else 401;
- TCP without a token (the config only allows that on a loopback address) and the Unix
  socket (mode 0600: the daemon's user and root): direct local clients only. A request
  carrying ``Forwarded``, ``X-Forwarded-For`` or ``X-Real-IP`` was relayed by a proxy,
  so it is refused with 403 and a ``control.refused`` log line saying why; a TCP peer
  that is not loopback is refused the same way.

Each area of the control API is a module with ``register(daemon, router)`` listed in
:data:`CONTROL_MODULES`.
"""

from __future__ import annotations

import hmac
import importlib
import ipaddress
from typing import Literal

from pydantic import SecretStr

from argbridge.http.asgi import Receive, Request, Response, Router, Scope, Send, problem
from argbridge.http.facade import ControlFacade
from argbridge.logging import get_logger

#: Modules exposing ``register(daemon, router)`` for parts of the control API.
CONTROL_MODULES: list[str] = [
    "argbridge.http.control_ops",
    "argbridge.http.control_arga",
    "argbridge.http.control_dlq",
    "argbridge.http.control_trace",
]

#: Request headers a reverse proxy adds; their presence means the peer is not the client.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")

Transport = Literal["unix", "tcp"]


class ControlAccess:
    """The access rule of one control listener (see the module docstring)."""

    def __init__(self, transport: Transport, token: SecretStr | None) -> None:
        self.transport = transport
        self._token = token.get_secret_value().encode() if token is not None else None
        self._log = get_logger(component="control", kind="service")

    def __repr__(self) -> str:
        return f"ControlAccess({self.transport!r}, token={'set' if self._token else 'none'})"

    def check(self, request: Request) -> Response | None:
        """``None`` when the caller may use the control API, else the 401/403 response."""
        if self.transport == "tcp" and self._token is not None:
            header = request.header("authorization") or ""
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self._token
            ):
                return problem(
                    401,
                    "Unauthorized",
                    "the control API needs a valid bearer token (control.token)",
                    headers={"www-authenticate": "Bearer"},
                )
            return None
        relayed = [name for name in FORWARDING_HEADERS if name in request.headers]
        if relayed:
            self._log.warning(
                "control.refused",
                reason="request relayed by a proxy: without control.token the control API "
                "only serves direct local clients",
                forwarding_headers=relayed,
                path=request.path,
                transport=self.transport,
            )
            return problem(
                403,
                "Forbidden",
                f"a request relayed by a proxy ({', '.join(relayed)}) is refused: without "
                "control.token the control API only serves direct local clients",
            )
        if self.transport == "tcp" and not _loopback_peer(request):
            self._log.warning(
                "control.refused",
                reason="peer is not a loopback address and control.token is not set",
                path=request.path,
                transport=self.transport,
            )
            return problem(
                403, "Forbidden", "the control API is loopback-only without control.token"
            )
        return None


def _loopback_peer(request: Request) -> bool:
    client = request.scope.get("client")
    host = client[0] if client else None
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GuardedRouter:
    """An ASGI app: :class:`ControlAccess` first, then the router (404/405 included, so
    a refused caller learns nothing about which paths exist)."""

    def __init__(self, router: Router, access: ControlAccess) -> None:
        self.router = router
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            denied = self.access.check(Request(scope, receive))
            if denied is not None:
                await denied.send(send)
                return
        await self.router(scope, receive, send)


def register_all(daemon: ControlFacade, router: Router) -> None:
    for module in CONTROL_MODULES:
        importlib.import_module(module).register(daemon, router)
