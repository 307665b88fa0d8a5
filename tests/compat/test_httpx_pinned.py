"""The SSRF guard on the connected address: real connections to a real local receiver.

Also the contract of compat.httpx_pinned's one use of httpx beyond its API (its
transport's ``_pool`` replaced): with httpx's own pool the first test would connect to
the rebinding answer."""

from __future__ import annotations

import re
import socket

import anyio
import httpx
import pytest

from argbridge.compat.httpx_pinned import guarded_transport
from argbridge.delivery.ssrf import DestinationRefused, check_addresses
from tests.support.receivers import Reply, WebhookReceiver, serve

LIMITS = httpx.Limits(max_connections=4)


class Rebinding:
    """A resolver whose answer the test changes between connections, as a rebinding DNS
    server would; counts the lookups."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        return list(self.answers)


def refuse(*denied: str):
    """A policy refusing exactly ``denied`` (the test's stand-in for "private"): every
    loopback address is private, so the default policy cannot show an allowed connect."""

    def approve(host: str, addresses: list[str]) -> None:
        for address in addresses:
            if address in denied:
                raise DestinationRefused(f"refusing {host}: {address}")

    return approve


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_connects_only_to_the_address_it_approved():
    receiver = WebhookReceiver(["whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    receiver.default = Reply(204)
    receiver.router.add("GET", "/ping", _ping)
    async with serve(receiver.router) as url:
        port = port_of(url)
        dns = Rebinding("127.0.0.1")
        transport = guarded_transport(LIMITS, dns, refuse("127.0.0.2"))
        async with httpx.AsyncClient(transport=transport) as client:
            first = await client.get(f"http://hooks.example:{port}/ping")
            assert first.status_code == 200
            assert first.text == "hooks.example"  # the Host header keeps the name
            assert dns.lookups == 1
            # The DNS answer changes; the kept-alive connection still goes to the address
            # that was approved, and a new connection is judged on the new answer.
            dns.answers = ["127.0.0.2"]
            again = await client.get(f"http://hooks.example:{port}/ping")
            assert again.status_code == 200
            assert dns.lookups == 1
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(DestinationRefused, match=re.escape("127.0.0.2")):
                await client.get(f"http://hooks.example:{port}/ping")
            assert dns.lookups == 2


async def _ping(request):
    from argbridge.http.asgi import Response

    return Response(200, (request.header("host") or "").split(":")[0].encode())


async def test_refuses_before_connecting_when_any_answer_is_private():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        dns = Rebinding("93.184.215.14", "127.0.0.1")  # public, then loopback
        async with httpx.AsyncClient(transport=guarded_transport(LIMITS, dns)) as client:
            with pytest.raises(DestinationRefused, match=re.escape("loopback address 127.0.0.1")):
                await client.post(f"http://hooks.example:{port}/hook", content=b"{}")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected


async def test_the_default_policy_refuses_localhost_and_metadata_literals():
    async with httpx.AsyncClient(transport=guarded_transport(LIMITS)) as client:
        with pytest.raises(DestinationRefused, match=re.escape("loopback")):
            await client.get("http://localhost:9/")
        with pytest.raises(
            DestinationRefused, match=re.escape("link-local address 169.254.169.254")
        ):
            await client.get("http://169.254.169.254/latest/meta-data/")
    with pytest.raises(DestinationRefused):
        check_addresses("x", ["::ffff:10.0.0.1"], allow_private=False)


async def test_a_failing_lookup_is_a_transient_connect_error():
    async def broken(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    async def slow(host: str, port: int) -> list[str]:
        await anyio.sleep_forever()
        raise AssertionError

    async with httpx.AsyncClient(transport=guarded_transport(LIMITS, broken)) as client:
        with pytest.raises(httpx.ConnectError, match=re.escape("cannot resolve hooks.example")):
            await client.get("http://hooks.example/")
    transport = guarded_transport(LIMITS, slow)
    async with httpx.AsyncClient(transport=transport, timeout=0.05) as client:
        with pytest.raises(
            httpx.ConnectTimeout, match=re.escape("resolving hooks.example timed out")
        ):
            await client.get("http://hooks.example/")
