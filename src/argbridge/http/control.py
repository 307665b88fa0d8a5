"""The authenticated control API (``/control/...``) and its access check.

Access: with ``http.control_token`` set, a request needs ``Authorization: Bearer <token>``
(compared in constant time); without it, only loopback clients are allowed. Each area
of the control API is a module with ``register(app, router)`` listed in
:data:`CONTROL_MODULES`.
"""

from __future__ import annotations

import hmac
import importlib
import ipaddress
from typing import TYPE_CHECKING

from argbridge.http.asgi import Request, Response, Router, problem

if TYPE_CHECKING:
    from argbridge.runtime import App

#: Modules exposing ``register(app, router)`` for parts of the control API.
CONTROL_MODULES: list[str] = [
    "argbridge.http.control_ops",
    "argbridge.http.control_arga",
    "argbridge.http.control_dlq",
    "argbridge.http.control_trace",
]


def check_access(app: App, request: Request) -> Response | None:
    """``None`` when the caller may use the control API, else the 401/403 response."""
    token = app.settings.http.control_token
    if token is not None:
        header = request.header("authorization") or ""
        scheme, _, given = header.partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return problem(
                401,
                "Unauthorized",
                "the control API needs a valid bearer token",
                headers={"www-authenticate": "Bearer"},
            )
        return None
    client = request.scope.get("client")
    host = client[0] if client else None
    try:
        if host is not None and ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return problem(403, "Forbidden", "the control API is loopback-only without http.control_token")


def register_all(app: App, router: Router) -> None:
    for module in CONTROL_MODULES:
        importlib.import_module(module).register(app, router)
