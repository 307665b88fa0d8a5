"""Outbound HTTP that connects only to the addresses the SSRF guard approved.

The webhook sink's guard (:mod:`argbridge.delivery.ssrf`) must judge the address the
socket actually connects to: checking a resolution and then letting the HTTP client
resolve again on connect lets a DNS answer that changes in between (rebinding) reach
loopback, private or metadata addresses. Here the resolution is done once per new
connection, every address is checked, and the connection goes to one of exactly those
addresses. TLS still verifies the certificate for, and sends SNI of, the host name, and
the request keeps its ``Host`` header: only the address lookup is taken over.

Owns :class:`GuardedNetworkBackend` (an ``httpcore`` network backend) and
:func:`guarded_transport` (an ``httpx`` transport using it).

Why in ``compat``: httpx's ``AsyncHTTPTransport`` takes no network backend, so the
transport here replaces the connection pool httpx built (its private ``_pool``) with
the same ``httpcore.AsyncConnectionPool`` on the guarded backend. Not for speed: it is
what makes the guard hold. The alternative without it, an ``AsyncBaseTransport`` of our
own around the pool, would have to copy httpx's private mapping of httpcore's exceptions
to its own, which the webhook sink's retry decisions read. The contract is
``tests/compat/test_httpx_pinned.py``: if httpx stopped reading ``_pool``, requests would
connect through httpx's own pool and resolver, and its first test (a connection made
only to the approved address, a rebinding answer refused) fails loudly.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import httpcore
import httpx

from argbridge.delivery.ssrf import check_addresses, literal_address

#: ``(host, port) -> addresses``; the default asks the system resolver.
Resolver = Callable[[str, int], Awaitable[list[str]]]
#: ``(host, addresses)``: raises ``DestinationRefused`` for a destination not allowed.
Approver = Callable[[str, list[str]], None]


def public_only(host: str, addresses: list[str]) -> None:
    check_addresses(host, addresses, allow_private=False)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolve, refuse non-public addresses (:class:`~argbridge.delivery.ssrf.DestinationRefused`),
    then connect to an approved address only."""

    def __init__(
        self,
        resolver: Resolver = system_resolver,
        approve: Approver = public_only,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._resolve = resolver
        self._approve = approve
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        literal = literal_address(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                with anyio.fail_after(timeout):
                    addresses = await self._resolve(host, port)
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
            except OSError as exc:  # DNS trouble is transient: the caller retries
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        self._approve(host, addresses)
        error: Exception | None = None
        for address in dict.fromkeys(addresses):
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # check_addresses refuses an empty answer
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not a webhook destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(
        self,
        limits: httpx.Limits,
        backend: httpcore.AsyncNetworkBackend,
        ssl_context: ssl.SSLContext,
    ) -> None:
        # No proxy from the environment: a proxy would connect on our behalf, past the guard.
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        # httpx builds its pool without a network_backend parameter; this pool is the
        # same one with the guarded backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def guarded_transport(
    limits: httpx.Limits,
    resolver: Resolver = system_resolver,
    approve: Approver = public_only,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncHTTPTransport:
    """An ``httpx`` transport whose every new connection passes the SSRF guard.

    ``ssl_context``: share one between transports (loading the CA bundle into a new
    context costs milliseconds); by default httpx's own defaults (certifi's CAs)."""
    if ssl_context is None:
        ssl_context = httpx.create_ssl_context(trust_env=False)
    return _GuardedTransport(limits, GuardedNetworkBackend(resolver, approve), ssl_context)
