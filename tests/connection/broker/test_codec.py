"""Jobs as JSON for RabbitMQ: every field survives the trip, and older messages still decode."""

from __future__ import annotations

import orjson

from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.codec import decode_job, encode_job
from ziggurat.model.engine import ChatMessage, GenerationRequest, SamplingParams

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_job_round_trips_with_its_queue_time_and_trace_context() -> None:
    request = GenerationRequest(
        request_id="j1",
        model="m",
        messages=(ChatMessage("system", "be brief"), ChatMessage("user", "你好")),
        params=SamplingParams(max_tokens=5, temperature=0.0, top_p=0.9, stop=("\n",), seed=3),
        continuation="Hel",
    )
    job = Job(
        job_id="j1",
        request=request,
        priority=Priority.INTERACTIVE,
        enqueued_at=1_700_000_000.25,
        trace_context={"traceparent": TRACEPARENT, "tracestate": "vendor=1"},
    )
    decoded = decode_job(encode_job(job))
    assert decoded == job
    assert decoded.submitted_at == 0.0  # monotonic time means nothing in another process


def test_a_message_from_before_queue_times_and_tracing_decodes_without_them() -> None:
    body = orjson.dumps(
        {
            "id": "old",
            "priority": 5,
            "model": "m",
            "messages": [["user", "hi"]],
            "params": {"max_tokens": None},
            "continuation": "",
        }
    )
    job = decode_job(body)
    assert (job.enqueued_at, dict(job.trace_context), job.priority) == (0.0, {}, Priority.API)
