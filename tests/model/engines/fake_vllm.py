"""A fake vLLM-like server (aiohttp.web on 127.0.0.1): streams tokens, publishes load the test sets.

It counts the chat streams it is serving (`open_streams`, and the most at
once, `peak_streams`), so a test asserts on what the upstream really saw.
Streams finish when `release` is set, or after `tokens` tokens with `token_delay_s`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

MODEL = "org/served-model"
WORDS = ("Hello", " there", ",", " 世界", "!")


@dataclass
class FakeVLLM:
    base_url: str = ""
    waiting: int = 0
    kv_cache_usage: float = 0.1
    healthy: bool = True
    has_metrics: bool = True
    metric_style: str = "vllm"
    """`vllm` or `sglang`: which names `/metrics` uses."""
    tokens: int = 5
    token_delay_s: float = 0.0
    hold: bool = False
    """Streams wait for `release` before their last token (the test controls how long they run)."""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    open_streams: int = 0
    peak_streams: int = 0
    total_streams: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def metrics_text(self) -> str:
        labels = f'{{model_name="{MODEL}"}}'
        other = '{model_name="another-model"}'
        if self.metric_style == "sglang":
            return (
                "# TYPE sglang:num_running_reqs gauge\n"
                f'sglang:num_running_reqs{{model_name="{MODEL}",tp_rank="0"}} {self.open_streams}.0\n'
                f'sglang:num_running_reqs{{model_name="{MODEL}",tp_rank="1"}} {self.open_streams}.0\n'
                f'sglang:num_queue_reqs{{model_name="{MODEL}",tp_rank="0"}} {self.waiting}.0\n'
                f'sglang:token_usage{{model_name="{MODEL}",tp_rank="0"}} {self.kv_cache_usage}\n'
            )
        return (
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            f"vllm:num_requests_running{labels} {float(self.open_streams)}\n"
            f"vllm:num_requests_running{other} 40.0\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            f"vllm:num_requests_waiting{labels} {float(self.waiting)}\n"
            f"vllm:num_requests_waiting{other} 99.0\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            f"vllm:kv_cache_usage_perc{labels} {self.kv_cache_usage}\n"
            'vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="org/served-model"} 3.0\n'
        )

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.has_metrics:
            return web.Response(status=404, text="Not Found")
        return web.Response(text=self.metrics_text(), content_type="text/plain")

    async def models(self, request: web.Request) -> web.Response:
        if not self.healthy:
            return web.json_response({"error": {"message": "engine dead"}}, status=503)
        return web.json_response({"object": "list", "data": [{"id": MODEL}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.open_streams += 1
        self.total_streams += 1
        self.peak_streams = max(self.peak_streams, self.open_streams)
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for index in range(self.tokens):
                if self.hold and index == self.tokens - 1:
                    await self.release.wait()
                elif self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                word = WORDS[index % len(WORDS)]
                await response.write(_sse(_chunk(word, body)))
            finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": self.tokens}}
            await response.write(_sse(finish) + _sse(usage) + b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        finally:
            self.open_streams -= 1


def _chunk(word: str, body: dict[str, Any]) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": {"content": word}, "finish_reason": None}
    if body.get("logprobs"):
        top = [
            {"token": word, "logprob": -0.25, "bytes": list(word.encode())},
            {"token": "x", "logprob": -2.5, "bytes": [120]},
        ][: body.get("top_logprobs", 0)]
        choice["logprobs"] = {
            "content": [{"token": word, "logprob": -0.25, "bytes": list(word.encode()), "top_logprobs": top}]
        }
    return {"id": "cmpl-1", "object": "chat.completion.chunk", "model": MODEL, "choices": [choice]}


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


@asynccontextmanager
async def running_vllm(**options: Any) -> AsyncIterator[FakeVLLM]:
    state = FakeVLLM(**options)
    app = web.Application()
    app.router.add_get("/metrics", state.metrics)
    app.router.add_get("/v1/models", state.models)
    app.router.add_post("/v1/chat/completions", state.chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.base_url = str(server.make_url("/v1"))
    try:
        yield state
    finally:
        state.release.set()
        await server.close()
