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
            "params": _encode_params(params),
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
        params=_decode_params(params),
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


def _encode_params(params: SamplingParams) -> dict[str, object]:
    """The sampling controls; the later ones only when set, so most jobs stay as short as before."""
    encoded: dict[str, object] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop),
        "seed": params.seed,
    }
    optional: dict[str, object] = {
        "top_k": params.top_k,
        "repetition_penalty": params.repetition_penalty,
        "frequency_penalty": params.frequency_penalty,
        "presence_penalty": params.presence_penalty,
        "stop_token_ids": list(params.stop_token_ids) or None,
        "logprobs": params.logprobs or None,
        "top_logprobs": params.top_logprobs or None,
    }
    encoded.update((name, value) for name, value in optional.items() if value is not None)
    return encoded


def _decode_params(params: dict[str, Any]) -> SamplingParams:
    """Tolerates jobs queued by an older gateway (no later fields) and a newer one (extra fields)."""
    return SamplingParams(
        max_tokens=params.get("max_tokens"),
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        stop=tuple(params.get("stop") or ()),
        seed=params.get("seed"),
        top_k=params.get("top_k"),
        repetition_penalty=params.get("repetition_penalty"),
        frequency_penalty=params.get("frequency_penalty"),
        presence_penalty=params.get("presence_penalty"),
        stop_token_ids=tuple(int(token) for token in params.get("stop_token_ids") or ()),
        logprobs=bool(params.get("logprobs", False)),
        top_logprobs=int(params.get("top_logprobs") or 0),
    )
