"""Jobs as bytes for queues that cross processes (JSON via orjson: readable in the RabbitMQ console)."""

from __future__ import annotations

from typing import Any, cast

import orjson

from ziggurat.connection.broker.base import Job, Priority
from ziggurat.model.engine import ChatMessage, GenerationRequest, Role, SamplingParams


def encode_job(job: Job) -> bytes:
    request = job.request
    params = request.params
    return orjson.dumps(
        {
            "id": job.job_id,
            "priority": int(job.priority),
            "model": request.model,
            "messages": [[m.role, m.content] for m in request.messages],
            "params": {
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "stop": list(params.stop),
                "seed": params.seed,
            },
            "continuation": request.continuation,
            "enqueued_at": job.enqueued_at,
            "trace": dict(job.trace_context),
        }
    )


def decode_job(body: bytes) -> Job:
    """The job in `body`; `ValueError` (or `KeyError`/`TypeError`) for a malformed message."""
    data: dict[str, Any] = orjson.loads(body)
    params = data["params"]
    request = GenerationRequest(
        request_id=str(data["id"]),
        model=str(data["model"]),
        messages=tuple(ChatMessage(cast(Role, role), str(content)) for role, content in data["messages"]),
        params=SamplingParams(
            max_tokens=params.get("max_tokens"),
            temperature=params.get("temperature"),
            top_p=params.get("top_p"),
            stop=tuple(params.get("stop") or ()),
            seed=params.get("seed"),
        ),
        continuation=str(data.get("continuation") or ""),
    )
    trace = data.get("trace") or {}
    return Job(
        job_id=request.request_id,
        request=request,
        priority=Priority(int(data["priority"])),
        enqueued_at=float(data.get("enqueued_at") or 0.0),
        trace_context={str(key): str(value) for key, value in trace.items()},
    )
