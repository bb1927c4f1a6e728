"""The baseline: the leanest possible streaming relay (aiohttp server + aiohttp client, no auth, no parsing).

Run as a process: `python bench/bare_relay.py PORT UPSTREAM_URL`.
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def open_session(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def close_session(app: web.Application) -> None:
        await app["session"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session: aiohttp.ClientSession = app["session"]
        async with session.post(
            upstream + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
        ) as upstream_response:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_post("/v1/chat/completions", relay)
    return app


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    web.run_app(make_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
