"""The framework floor: the leanest relay FastAPI on uvicorn allows (aiohttp client, no auth, no parsing).

Run as a process: `python bench/fastapi_relay.py PORT UPSTREAM_URL`. Same job as bare_relay.py
(bytes in, bytes out) but served the way ziggurat is served (uvicorn, uvloop, httptools,
FastAPI routing, a `StreamingResponse`), so `gateway_overhead.py --framework-floor` can tell the
cost of the web framework from the cost of ziggurat's own work.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse


def make_app(upstream: str) -> FastAPI:
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        yield
        await sessions[0].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def relay(request: Request) -> StreamingResponse:
        body = await request.body()
        upstream_response = await sessions[0].post(
            upstream + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream_response.content.iter_any():
                    yield chunk
            finally:
                upstream_response.release()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(
        make_app(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
