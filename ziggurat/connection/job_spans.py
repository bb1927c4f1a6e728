"""How a worker describes its jobs in traces: the attributes of the `job` and `engine.generate` spans.

Names follow OpenTelemetry's GenAI semantic conventions (`gen_ai.*`) where one exists,
`ziggurat.*` otherwise. Nothing here starts or ends a span: see `connection/worker.py`.
"""

from __future__ import annotations

from ziggurat.connection.broker.base import Job
from ziggurat.model.engine import GenerationEnd, GenerationRequest
from ziggurat.tracing.base import Attributes, Span


def job_attributes(job: Job) -> Attributes:
    return {
        "ziggurat.job_id": job.job_id,
        "ziggurat.priority": job.priority.name.lower(),
        "gen_ai.request.model": job.request.model,
    }


def request_attributes(request: GenerationRequest) -> Attributes:
    attributes: dict[str, str | int | bool] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": request.model,
        "ziggurat.resumed": bool(request.continuation),
    }
    if request.params.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = request.params.max_tokens
    return attributes


def describe_end(span: Span, end: GenerationEnd) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", end.usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", end.usage.completion_tokens)
    span.set_attribute("gen_ai.response.finish_reasons", [end.finish_reason])
    if end.finish_reason == "error":
        span.set_error("generation_failed")
