"""EventStreamResponse at the ASGI level: the body streams in its own task, watched by the request's."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ziggurat.connection.http.sse import FinalFrame, sse_response

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}


class FakeServer:
    """uvicorn's side of one response: `receive` reports a disconnect once the body is complete,
    or when the client leaves (`leave`)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self._ended = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._ended.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._ended.set()

    def leave(self) -> None:
        self._ended.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def test_the_body_streams_whole_and_the_final_frame_ends_it_in_the_same_write() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield FinalFrame(b"data: [DONE]\n\n")

    server = FakeServer()
    await sse_response(body())(SCOPE, server.receive, server.send)
    assert server.sent[0]["status"] == 200
    assert server.body == b"data: 1\n\ndata: [DONE]\n\n"
    assert server.sent[-1] == {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False}


async def test_a_body_that_fails_mid_stream_raises_in_the_requests_task() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        raise RuntimeError("engine exploded")

    server = FakeServer()
    with pytest.raises(RuntimeError, match="engine exploded"):
        await asyncio.wait_for(sse_response(body())(SCOPE, server.receive, server.send), 5)
    assert server.body == b"data: 1\n\n"


class StuckBody:
    """A body that sends `first` (when given), then waits for good; says when it is waiting and
    when its cleanup (`finally`) ran."""

    def __init__(self, first: bytes | None = None) -> None:
        self.first = first
        self.waiting = asyncio.Event()
        self.cleaned_up = asyncio.Event()

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            if self.first is not None:
                yield self.first
            self.waiting.set()
            await asyncio.sleep(60)
            yield b"data: never\n\n"
        finally:
            self.cleaned_up.set()


async def test_a_client_that_leaves_ends_the_body_and_its_cleanup_runs() -> None:
    body = StuckBody(b"data: 1\n\n")
    server = FakeServer()
    call = asyncio.create_task(sse_response(body())(SCOPE, server.receive, server.send))
    await asyncio.wait_for(body.waiting.wait(), 5)
    server.leave()
    await asyncio.wait_for(call, 5)  # returns quietly: nobody is left to answer
    assert body.cleaned_up.is_set()
    assert server.body == b"data: 1\n\n"


async def test_cancelling_the_request_cancels_the_body_too() -> None:
    body = StuckBody()
    server = FakeServer()
    call = asyncio.create_task(sse_response(body())(SCOPE, server.receive, server.send))
    await asyncio.wait_for(body.waiting.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(body.cleaned_up.wait(), 5)


async def test_the_body_task_runs_with_the_requests_context() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    request_id.set("req-1")

    async def body() -> AsyncIterator[bytes]:
        yield FinalFrame(request_id.get().encode())

    server = FakeServer()
    await sse_response(body())(SCOPE, server.receive, server.send)
    assert server.body == b"req-1"
