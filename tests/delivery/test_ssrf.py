from __future__ import annotations

import ipaddress

import pytest

from argbridge.delivery.ssrf import (
    DestinationRefused,
    check_addresses,
    host_and_port,
    literal_address,
    why_refused,
)
from argbridge.errors import PermanentDeliveryError


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_why_refused(address, reason):
    assert why_refused(ipaddress.ip_address(address)) == reason


def test_check_addresses():
    with pytest.raises(DestinationRefused, match=r"loopback address 127\.0\.0\.1"):
        check_addresses("localhost", ["93.184.216.34", "127.0.0.1"], allow_private=False)
    with pytest.raises(DestinationRefused, match="no address"):
        check_addresses("x", [], allow_private=False)
    check_addresses("localhost", ["127.0.0.1"], allow_private=True)
    check_addresses(
        "example.com",
        ["93.184.216.34", "fe80::1%eth0".replace("fe80::1", "2606:4700::1111")],
        allow_private=False,
    )
    assert issubclass(DestinationRefused, PermanentDeliveryError)


def test_urls():
    assert host_and_port("https://example.com/x") == ("example.com", 443)
    assert host_and_port("http://[::1]:8080/") == ("::1", 8080)
    with pytest.raises(ValueError):
        host_and_port("ftp://example.com")
    assert literal_address("::1") == ipaddress.ip_address("::1")
    assert literal_address("example.com") is None
