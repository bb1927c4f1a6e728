"""Server-sent events: framing and the streaming response.

Bodies are pre-encoded bytes so a stream of thousands of chunks costs one
`orjson.dumps` and one concatenation per chunk. Proxy buffering is disabled
(`X-Accel-Buffering: no`) so nginx forwards each event at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

DONE = b"data: [DONE]\n\n"
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


def sse_response(body: AsyncIterator[bytes], *, headers: dict[str, str] | None = None) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})
