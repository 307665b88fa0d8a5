"""The demo's verifying receiver: real HTTP, signatures checked with standardwebhooks."""

from __future__ import annotations

import time

import anyio
import httpx

from argbridge.delivery.webhook_out import Signer, build_request
from argbridge.demo.config import new_secret
from argbridge.demo.receiver import PATH, SignedWebhookReceiver
from argbridge.http.embed import serve
from tests.conftest import make_event


async def test_counts_valid_and_invalid_signatures():
    secret = new_secret()
    receiver = SignedWebhookReceiver(secret)
    good = build_request(make_event(1), Signer([secret]), time.time())
    other = build_request(make_event(2), Signer([new_secret()]), time.time())
    stale = build_request(make_event(3), Signer([secret]), time.time() - 3600)
    with anyio.fail_after(10):
        async with serve(receiver.router) as base, httpx.AsyncClient(base_url=base) as client:
            r = await client.post(PATH, content=good.body, headers=good.headers)
            assert r.status_code == 204
            for req in (other, stale):
                r = await client.post(PATH, content=req.body, headers=req.headers)
                assert r.status_code == 401
                assert r.headers["content-type"] == "application/problem+json"
            tampered = good.body.replace(b'"n":1', b'"n":9')
            r = await client.post(PATH, content=tampered, headers=good.headers)
            assert r.status_code == 401
            r = await client.post(PATH, content=b"{}")
            assert r.status_code == 401
    assert (receiver.valid, receiver.invalid) == (1, 4)
    assert receiver.types == {"arga.validation.step_result": 1}
    assert secret not in repr(receiver)
