"""The raw ASGI layer driven directly with scripted ``receive``/``send`` (no server)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import orjson
import pytest

from argbridge.http.asgi import (
    BodyTimeout,
    BodyTooLarge,
    Message,
    Request,
    Response,
    Router,
    _deadlines,
    json_response,
    problem,
)


def scope(method: str = "POST", path: str = "/x", headers: dict[str, str] | None = None) -> Any:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"a=1&a=2",
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }


class Feed:
    """A ``receive`` that hands out scripted body chunks and counts the calls."""

    def __init__(self, chunks: list[bytes], *, stall: bool = False) -> None:
        self.chunks = chunks
        self.calls = 0
        self.stall = stall

    async def __call__(self) -> Message:
        self.calls += 1
        if not self.chunks:
            if self.stall:
                await anyio.sleep_forever()
            return {"type": "http.disconnect"}
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        status: int = self.messages[0]["status"]
        return status

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> Any:
        return orjson.loads(self.messages[1]["body"])


async def test_body_reassembles_chunks():
    feed = Feed([b"ab", b"", b"cd"])
    assert await Request(scope(), feed).body(10) == b"abcd"


async def test_body_too_large_stops_at_the_first_chunk_over_the_limit():
    feed = Feed([b"x" * 100] * 1000)  # 100 kB offered
    with pytest.raises(BodyTooLarge):
        await Request(scope(), feed).body(250)
    assert feed.calls == 3  # 300 bytes read, 99.7 kB never touched


async def test_declared_length_over_limit_refused_without_reading():
    feed = Feed([b"x"])
    with pytest.raises(BodyTooLarge):
        await Request(scope(headers={"content-length": "9999"}), feed).body(100)
    assert feed.calls == 0


async def test_body_deadline():
    # One byte of a longer body, then nothing: a slow-loris sender.
    feed = Feed([b"x"], stall=True)
    with anyio.fail_after(5), pytest.raises(BodyTimeout):
        await Request(scope(), _keep_open(feed)).body(100, 0.05)


async def test_a_shorter_deadline_added_later_fires_first_and_alone():
    # One shared loop timer serves every body deadline: it is re-armed for an earlier one.
    outcome: dict[str, str] = {}
    short_done = anyio.Event()

    async def read(name: str, deadline: float, done: anyio.Event | None = None) -> None:
        try:
            await Request(scope(), _keep_open(Feed([b"x"], stall=True))).body(100, deadline)
        except BodyTimeout:
            outcome[name] = "timeout"
        except asyncio.CancelledError:
            outcome[name] = "cancelled"
            raise
        finally:
            if done is not None:
                done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read, "long", 60.0)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(read, "short", 0.05, short_done)
            await short_done.wait()
            assert outcome == {"short": "timeout"}  # the 60 s one is still waiting
            tg.cancel_scope.cancel()  # an outside cancellation stays a cancellation
    assert outcome == {"short": "timeout", "long": "cancelled"}
    assert not _deadlines(asyncio.get_running_loop())._due  # nothing left behind


async def test_completed_reads_leave_no_deadline_behind():
    for _ in range(3):
        assert await Request(scope(), Feed([b"ab", b"c"])).body(100, 0.05) == b"abc"
    assert not _deadlines(asyncio.get_running_loop())._due


def _keep_open(feed: Feed) -> Any:
    """Like ``feed`` but every chunk says more body follows."""

    async def receive() -> Message:
        message = await feed()
        message["more_body"] = True
        return message

    return receive


async def test_discard_is_bounded():
    big = Feed([b"x" * 1000] * 100)
    request = Request(scope(), big)
    assert not await request.discard(5000, 1.0)
    assert big.calls <= 7
    small = Feed([b"x" * 10] * 3)
    assert await Request(scope(), small).discard(5000, 1.0)
    declared = Request(scope(headers={"content-length": "100000000"}), Feed([b"x"]))
    assert not await declared.discard(5000, 1.0)


async def test_request_basics():
    request = Request(scope(headers={"X-Thing": "1"}), Feed([]))
    assert request.header("x-thing") == "1"
    assert request.query == {"a": ["1", "2"]}


def echo(tag: str) -> Any:
    async def handler(request: Request) -> Response:
        return json_response({"tag": tag, "params": request.params})

    return handler


async def call(router: Router, method: str, path: str, **kw: Any) -> Sent:
    sent = Sent()
    await router(scope(method, path, kw.get("headers")), kw.get("receive", Feed([b""])), sent)
    return sent


async def test_literal_routes_win_over_params():
    router = Router()
    router.add("POST", "/webhooks/{name}", echo("param"))
    router.add("POST", "/webhooks/argus", echo("literal"))
    assert (await call(router, "POST", "/webhooks/argus")).body["tag"] == "literal"
    other = await call(router, "POST", "/webhooks/other")
    assert other.body == {"tag": "param", "params": {"name": "other"}}


async def test_404_405_problems():
    router = Router()
    router.add("POST", "/webhooks/argus", echo("x"))
    router.add("PUT", "/webhooks/argus", echo("y"))
    missing = await call(router, "POST", "/nope")
    assert missing.status == 404
    assert missing.headers[b"content-type"] == b"application/problem+json"
    wrong = await call(router, "GET", "/webhooks/argus")
    assert wrong.status == 405
    assert wrong.headers[b"allow"] == b"POST, PUT"
    assert wrong.body["title"] == "Method Not Allowed"


async def test_413_and_408_close_the_connection():
    async def reads(request: Request) -> Response:
        await request.body(10, 0.05)
        return Response(204)

    router = Router()
    router.add("POST", "/r", reads)
    too_big = await call(router, "POST", "/r", receive=Feed([b"x" * 20, b"y"]))
    assert too_big.status == 413 and too_big.headers[b"connection"] == b"close"

    async def stall() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    with anyio.fail_after(5):
        slow = await call(router, "POST", "/r", receive=stall)
    assert slow.status == 408 and slow.headers[b"connection"] == b"close"


async def test_client_disconnect_sends_nothing_and_errors_are_500():
    async def reads(request: Request) -> Response:
        await request.body(10)
        return Response(204)

    async def boom(request: Request) -> Response:
        raise RuntimeError("bug")

    router = Router()
    router.add("POST", "/r", reads)
    router.add("POST", "/boom", boom)
    gone = await call(router, "POST", "/r", receive=Feed([]))
    assert gone.messages == []
    failed = await call(router, "POST", "/boom")
    assert failed.status == 500 and failed.body["title"] == "Internal Server Error"


async def test_lifespan_and_problem_shape():
    router = Router()
    script: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> Message:
        return script.pop(0)

    sent = Sent()
    await router({"type": "lifespan"}, receive, sent)
    assert [m["type"] for m in sent.messages] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    p = problem(422, "Unprocessable Content", "why", headers={"x": "y"}, field="a")
    assert orjson.loads(p.body) == {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "why",
        "field": "a",
    }
    assert p.content_type == b"application/problem+json"


async def test_body_deadline_timer_does_not_outlive_the_read():
    """After a body arrived in time, the (cancelled) timer must not hit later awaits."""
    body = await Request(scope(), Feed([b"ab", b"cd"])).body(100, 0.01)
    assert body == b"abcd"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    # Wait past the deadline on a loop timer of our own: no stray cancellation arrives.
    done = anyio.Event()
    asyncio.get_running_loop().call_later(0.05, done.set)
    with anyio.fail_after(5):
        await done.wait()


async def test_body_deadline_keeps_foreign_cancellation():
    """A cancellation that is not the deadline's stays a cancellation."""

    async def reader() -> None:
        await Request(scope(), Feed([], stall=True)).body(100, 10)

    task = asyncio.ensure_future(reader())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
