"""A small fake OpenAI-compatible server (aiohttp.web on 127.0.0.1) for the remote engine's tests."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

API_KEY = "sk-test-secret-0123456789"
REMOTE_MODEL = "org/remote-model"


def chunk(
    content: str | None = None, *, finish: str | None = None, role: str | None = None
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": REMOTE_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def sse(payload: dict[str, Any], *, newline: bytes = b"\n") -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + newline + newline


USAGE_CHUNK = sse({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5}})
DONE = b"data: [DONE]\n\n"
FLOOD_TEXT = "flood " * 50
FLOOD_EVENTS = 4000
"""Events the "flood" scenario sends at once after its first, FLOOD_TEXT each: about 1.6 MB,
several times aiohttp's read buffer (its high-water mark is 512 KiB by default)."""
HELLO_EVENTS = [
    b": keepalive\n\n",
    sse(chunk("", role="assistant")),
    sse(chunk("Hello")),
    b": ping\n\n",
    sse(chunk(", 世界"), newline=b"\r\n"),
    sse(chunk("!")),
]
HELLO_TEXT = "Hello, 世界!"


def split_awkwardly(stream: bytes) -> list[bytes]:
    """Pieces cut every 11 bytes and inside the first multi-byte character."""
    cuts = set(range(11, len(stream), 11)) | {stream.find("世".encode()) + 1}
    bounds = [0, *sorted(cuts), len(stream)]
    return [stream[start:end] for start, end in itertools.pairwise(bounds)]


@dataclass
class FakeOpenAI:
    """What the fake server streams (`scenario`) and what it saw."""

    base_url: str = ""
    scenario: str = "hello"
    listed_models: list[str] = field(default_factory=lambda: [REMOTE_MODEL])
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[CIMultiDict[str]] = field(default_factory=list)
    peers: list[object] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0
    """The next this many chat requests get HTTP 500, whatever the scenario."""

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m} for m in self.listed_models]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        self.headers.append(request.headers.copy())
        self.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        if self.failures > 0:
            self.failures -= 1
            return web.json_response({"error": {"message": "overheated"}}, status=500)
        if self.scenario == "slow_headers":
            await asyncio.sleep(30)
        errors = {
            "http_500": (500, {"error": {"message": "CUDA out of memory", "type": "server_error"}}),
            "http_401": (401, {"error": {"message": f"Incorrect API key provided: {API_KEY}"}}),
            "http_400": (400, {"object": "error", "message": "maximum context length is 4096 tokens"}),
            "http_429": (429, {"error": {"message": "too many requests"}}),
            "http_503": (503, {"error": {"message": "warming up"}}),
        }
        if self.scenario == "http_502_html":
            return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")
        if self.scenario in errors:
            status, body = errors[self.scenario]
            return web.json_response(body, status=status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.scenario == "endless":
            await self._stream_forever(response)
        if self.scenario in ("pings_only", "stall_after_first"):
            await self._stall(response, first=self.scenario == "stall_after_first")
        if self.scenario == "flood":
            await self._flood(response)
            return response
        if self.scenario == "short":
            await response.write(b"".join(self._events()))
            await response.write_eof()
            return response
        for piece in split_awkwardly(b"".join(self._events())):
            await response.write(piece)
            await asyncio.sleep(0.001)
        await response.write_eof()
        return response

    def _events(self) -> list[bytes]:
        finish = sse(chunk(None, finish="stop"))
        match self.scenario:
            case "hello":
                return [*HELLO_EVENTS, finish, USAGE_CHUNK, DONE]
            case "short":
                return [sse(chunk("Hi")), finish, USAGE_CHUNK, DONE]
            case "no_usage":
                return [*HELLO_EVENTS, finish, DONE]
            case "length":
                return [sse(chunk("Hel")), sse(chunk(None, finish="length")), USAGE_CHUNK, DONE]
            case "content_filter":
                return [sse(chunk("Hel")), sse(chunk(None, finish="content_filter")), DONE]
            case "mid_error":
                return [sse(chunk("Hel")), sse({"error": {"message": "engine crashed", "code": 500}})]
            case "malformed":
                return [sse(chunk("Hel")), b'data: {"choices": [\n\n', DONE]
            case "truncated":
                return [sse(chunk("Hel"))]
        raise AssertionError(self.scenario)

    async def _flood(self, response: web.StreamResponse) -> None:
        """A first text, then FLOOD_EVENTS more at once, each its own HTTP chunk."""
        await response.write(sse(chunk(FLOOD_TEXT)))
        await asyncio.sleep(0.05)
        for _ in range(FLOOD_EVENTS):
            await response.write(sse(chunk(FLOOD_TEXT)))
        for event in (sse(chunk(None, finish="stop")), DONE):
            await response.write(event)
        await response.write_eof()

    async def _stall(self, response: web.StreamResponse, *, first: bool) -> None:
        """Keep-alive comments, after one word when `first`, and never (more) text."""
        try:
            if first:
                await response.write(sse(chunk("Hel")))
            while True:
                await response.write(b": ping\n\n")
                await asyncio.sleep(0.02)
        finally:
            self.disconnected.set()

    async def _stream_forever(self, response: web.StreamResponse) -> None:
        # aiohttp either fails the next write or cancels the handler when the client goes.
        try:
            while True:
                await response.write(sse(chunk("tick ")))
                await asyncio.sleep(0.01)
        finally:
            self.disconnected.set()


@asynccontextmanager
async def running_fake() -> AsyncIterator[FakeOpenAI]:
    state = FakeOpenAI()
    app = web.Application()
    app.router.add_get("/v1/models", state.models)
    app.router.add_post("/v1/chat/completions", state.chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.base_url = str(server.make_url("/v1"))
    try:
        yield state
    finally:
        await server.close()
