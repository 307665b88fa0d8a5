"""The private-address guard for outbound requests (SSRF).

Pure: the driver (:mod:`argbridge.compat.httpx_pinned`) resolves the host for every new
connection, passes the addresses here, and connects only to an approved one, so a DNS
answer that changes between check and connect (rebinding) cannot get through.
A destination is refused when *any* address it resolves to is loopback, private
(RFC 1918, ULA), link-local (including cloud metadata ``169.254.169.254``), carrier-grade
NAT, multicast, unspecified or reserved — also when wrapped as IPv4-mapped/6to4 IPv6 —,
unless the endpoint is explicitly allowed (``allow_private``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from argbridge.errors import PermanentDeliveryError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class DestinationRefused(PermanentDeliveryError):
    """The destination is a private/loopback/link-local address and not allowed."""


def why_refused(address: IPAddress) -> str | None:
    """The reason ``address`` is not a public destination, or ``None`` when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return why_refused(mapped)
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "carrier-grade NAT"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    return None


def check_addresses(host: str, addresses: Iterable[str], *, allow_private: bool) -> None:
    """Raise :class:`DestinationRefused` unless every address of ``host`` is public."""
    if allow_private:
        return
    seen = False
    for text in addresses:
        seen = True
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = why_refused(address)
        if reason is not None:
            raise DestinationRefused(
                f"refusing {host}: it resolves to {reason} address {address} "
                "(set allow_private = true on this endpoint to allow it)"
            )
    if not seen:
        raise DestinationRefused(f"refusing {host}: it resolves to no address")


def host_and_port(url: str) -> tuple[str, int]:
    """``(host, port)`` of an http(s) URL; raises ``ValueError`` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {parts.scheme}://{parts.hostname}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def literal_address(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal (no DNS needed), else ``None``."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
