"""A mock OpenAI-compatible server that streams a fixed number of tokens at a fixed rate.

Run as a process: `python bench/mock_upstream.py PORT TOKENS INTER_TOKEN_S`. It is the
"model" for gateway benchmarks, so their numbers measure the gateway, not a model.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import web


def make_app(tokens: int, inter_token_s: float) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "mock", "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        head = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "mock",
        }
        for index in range(tokens):
            if index:
                await asyncio.sleep(inter_token_s)
            chunk = {
                **head,
                "choices": [{"index": 0, "delta": {"content": f" tok{index}"}, "finish_reason": None}],
            }
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        final = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {
            **head,
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5},
        }
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\n")
        await response.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    port, tokens, inter_token_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    web.run_app(make_app(tokens, inter_token_s), host="127.0.0.1", port=port, print=None, access_log=None)
