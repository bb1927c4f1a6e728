"""A `base:adapter` request goes to the queue of its base model's workers, and to nothing else.

Gateways know an adapter from the model directory (`ModelInfo.base_model`, as a
worker advertises it); the job keeps the full model name, so the worker's
engine knows which adapter to decode with.
"""

from __future__ import annotations

from tests.brokers import memory_broker
from ziggurat.connection.broker.base import Priority
from ziggurat.connection.models import StaticModels
from ziggurat.model.engine import ChatMessage, GenerationRequest, ModelInfo
from ziggurat.service.generation import GenerationService
from ziggurat.service.metrics import Metrics

MESSAGES = (ChatMessage(role="user", content="hi"),)


async def test_an_adapter_job_is_queued_for_the_base_model_with_its_full_name() -> None:
    broker = memory_broker()
    models = StaticModels(
        [
            ModelInfo(name="tiny", engine="transformers"),
            ModelInfo(name="tiny:alpha", engine="transformers", base_model="tiny"),
            ModelInfo(name="other:tag", engine="openai"),
        ]
    )
    service = GenerationService(broker=broker, models=models, metrics=Metrics())

    await service.submit(
        GenerationRequest(request_id="a", model="tiny:alpha", messages=MESSAGES), priority=Priority.API
    )
    await service.submit(
        GenerationRequest(request_id="b", model="other:tag", messages=MESSAGES), priority=Priority.API
    )

    assert broker.queue_depth("tiny") == 1 and broker.queue_depth("tiny:alpha") == 0
    # A served name that merely contains ':' is its own model, not an adapter.
    assert broker.queue_depth("other:tag") == 1
    delivery = await broker.jobs.take("tiny")
    assert delivery.job.request.model == "tiny:alpha"
