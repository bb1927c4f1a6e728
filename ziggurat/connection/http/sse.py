"""Server-sent events: framing and the streaming response.

Bodies are pre-encoded bytes so a stream of thousands of chunks costs one
`orjson.dumps` and one concatenation per chunk. Proxy buffering is disabled
(`X-Accel-Buffering: no`) so nginx forwards each event at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ziggurat.cancellation import cancel_and_wait

DONE = b"data: [DONE]\n\n"
_BINARY = (bytes, memoryview)  # a tuple: `bytes | memoryview` would build a union per chunk
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def encode_event(payload: Any, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One SSE frame whose `data` is `payload` as compact JSON."""
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    head = b""
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


class FinalFrame(bytes):
    """The last bytes of an event stream: they leave together with the end of the body.

    A body iterator that yields one lets the response send its data and the
    chunked-encoding terminator in one write instead of two (each write is a
    `send()` through the whole middleware stack and a system call). Nothing may
    follow it.
    """

    __slots__ = ()


class EventStreamResponse(StreamingResponse):
    """A `StreamingResponse` whose body streams in a task of its own, watched by the request's task.

    uvicorn speaks ASGI 2.3 over HTTP, so Starlette watches for the disconnect in an
    anyio task group per response: ~5% of a busy gateway's CPU in profiles
    (bench/gateway_overhead.py). Here the request's own task waits for
    `http.disconnect` and a plain task streams the body. That way round, because a
    stream wakes once per slice of the answer and every wake-up resumes each frame its
    task is suspended in: the request's task sits under some twenty frames of server,
    middleware and routing, the body's task under only the body's own generators.
    A client that leaves cancels the body's task, which ends the body iterator (its
    `finally` blocks run, so a generation nobody reads is cancelled as before); a body
    that fails wakes the request's task, which raises its error as if it had streamed
    the body itself. A `FinalFrame` ends the body in the same write.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await super().__call__(scope, receive, send)
            return
        streaming = True
        """The body is not complete yet (after it, the server reports a disconnect: not a client leaving)."""
        interrupted = False

        async def stream() -> None:
            nonlocal streaming
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await send(start)
            async for chunk in self.body_iterator:
                if not streaming:
                    continue  # the body has ended: the iterator is only finishing its own work
                if isinstance(chunk, FinalFrame):
                    streaming = False
                body = chunk if isinstance(chunk, _BINARY) else chunk.encode(self.charset)
                await send({"type": "http.response.body", "body": body, "more_body": streaming})
            if streaming:
                streaming = False
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        def on_stream_end(_: asyncio.Task[None]) -> None:
            nonlocal interrupted
            if streaming:  # it failed before the body was complete: the server will report nothing
                interrupted = True
                task.cancel()

        streamer = asyncio.get_running_loop().create_task(stream())
        streamer.add_done_callback(on_stream_end)
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except asyncio.CancelledError:
            if not interrupted or task.uncancel() > 0:
                streamer.remove_done_callback(on_stream_end)
                streamer.cancel()
                raise
        if streaming:  # the client left, or the body failed before it was complete
            streamer.remove_done_callback(on_stream_end)
            await cancel_and_wait(streamer)  # its reader may be a Redis stream's: see cancellation.py
            if interrupted:
                streamer.result()  # raises what the body raised
            if task.cancelling():
                raise asyncio.CancelledError
            return  # nobody is left to answer
        await streamer  # done: raises what the body raised
        if self.background is not None:
            await self.background()


def sse_response(body: AsyncIterator[bytes], *, headers: dict[str, str] | None = None) -> StreamingResponse:
    return EventStreamResponse(
        body, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
    )
