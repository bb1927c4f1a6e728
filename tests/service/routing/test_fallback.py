"""Retries and fallbacks before the first token, through the real in-process broker and workers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass, field

import aio_pika
import pytest
import redis.asyncio

from tests.brokers import memory_broker, running_worker
from tests.service.routing.engines import RoutedEngine
from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.broker.rabbitmq import RabbitJobQueue
from ziggurat.connection.broker.rabbitmq_names import dead_letter_queue_name, queue_name
from ziggurat.connection.models import StaticModels
from ziggurat.connection.streams.redis import RedisStreams
from ziggurat.errors import ModelNotFound, Overloaded
from ziggurat.model.engine import ChatMessage, GenerationEnd, GenerationRequest, ModelInfo, TextDelta
from ziggurat.service.generation import GenerationService
from ziggurat.service.metrics import Metrics
from ziggurat.service.routing.fallback import FallbackStream
from ziggurat.service.routing.policy import RoutingPolicy


@dataclass
class Pauses:
    """A `sleep` that records each pause and yields once instead of waiting."""

    seconds: list[float] = field(default_factory=list)

    async def __call__(self, delay_s: float) -> None:
        self.seconds.append(delay_s)
        await asyncio.sleep(0)


@dataclass
class Served:
    generation: GenerationService
    metrics: Metrics
    broker: Broker

    def fallbacks(self, from_model: str, to_model: str, reason: str) -> float:
        labels = {"from_model": from_model, "to_model": to_model, "reason": reason}
        return self.metrics.registry.get_sample_value("ziggurat_fallbacks_total", labels) or 0.0


@asynccontextmanager
async def serving(
    *engines: RoutedEngine,
    policy: RoutingPolicy,
    idle: tuple[str, ...] = (),
    max_queue_depth: int = 64,
    broker: Broker | None = None,
) -> AsyncIterator[Served]:
    """Workers for `engines`; `idle` models are listed as served but no worker takes their jobs."""
    broker = broker or memory_broker(max_queue_depth=max_queue_depth)
    metrics = Metrics()
    models = StaticModels([*(engine.info for engine in engines), *(ModelInfo(name, "idle") for name in idle)])
    async with AsyncExitStack() as stack:
        for engine in engines:
            await stack.enter_async_context(running_worker(broker, engine))
        yield Served(
            GenerationService(broker=broker, models=models, metrics=metrics, routing=policy), metrics, broker
        )
    await broker.aclose()


def ask(model: str) -> GenerationRequest:
    return GenerationRequest(request_id=uuid.uuid4().hex, model=model, messages=(ChatMessage("user", "Hi"),))


async def submit(served: Served, model: str, *, cancel_on_close: bool = True) -> FallbackStream:
    stream = await served.generation.submit(
        ask(model), priority=Priority.API, cancel_on_close=cancel_on_close
    )
    assert isinstance(stream, FallbackStream)
    return stream


CHAIN = {"ft": ("base",)}


async def test_an_error_before_the_first_token_falls_back_to_the_next_model() -> None:
    ft, base = RoutedEngine("ft"), RoutedEngine("base")
    ft.failures = 1
    async with serving(ft, base, policy=RoutingPolicy(fallbacks=CHAIN)) as served:
        stream = await submit(served, "ft")
        text, end = await stream.collect()

        assert (text, end.finish_reason) == (base.reply, "stop")
        assert stream.answered_by == "base" and stream.job.request.model == "ft"
        assert [request.model for request in base.requests] == ["base"]
        assert base.requests[0].request_id == f"{stream.job.job_id}.1"
        assert served.fallbacks("ft", "base", "error") == 1


async def test_a_slow_first_token_falls_back_and_cancels_the_slow_job() -> None:
    ft, base = RoutedEngine("ft"), RoutedEngine("base")
    ft.first_token_delay_s = 30
    policy = RoutingPolicy(fallbacks=CHAIN, first_token_timeout_s=0.2)
    async with serving(ft, base, policy=policy) as served:
        stream = await submit(served, "ft")
        text, end = await stream.collect()

        assert (text, end.finish_reason, stream.answered_by) == (base.reply, "stop", "base")
        assert served.fallbacks("ft", "base", "timeout") == 1
        for _ in range(100):
            if ft.cancelled:
                break
            await asyncio.sleep(0.01)
        assert ft.cancelled == 1  # the slow model's slot is freed


async def test_the_last_model_gets_no_first_token_deadline() -> None:
    ft = RoutedEngine("ft")
    ft.first_token_delay_s = 0.3
    async with serving(ft, policy=RoutingPolicy(first_token_timeout_s=0.05, max_retries=1)) as served:
        text, end = await (await submit(served, "ft")).collect()

        assert (text, end.finish_reason) == (ft.reply, "stop")
        assert len(ft.requests) == 1


async def test_no_switch_after_the_first_token() -> None:
    ft, base = RoutedEngine("ft"), RoutedEngine("base")
    ft.fail_after_first_token = True
    async with serving(ft, base, policy=RoutingPolicy(fallbacks=CHAIN, max_retries=2)) as served:
        text, end = await (await submit(served, "ft")).collect()

        assert text == "Answer"
        assert (end.finish_reason, end.error) == ("error", "ft broke")
        assert base.requests == [] and len(ft.requests) == 1


async def test_retries_with_jittered_backoff_before_moving_on() -> None:
    ft, base = RoutedEngine("ft"), RoutedEngine("base")
    ft.failures = 2
    pauses = Pauses()
    policy = RoutingPolicy(
        fallbacks=CHAIN, max_retries=2, backoff_base_s=0.2, backoff_cap_s=0.3, sleep=pauses
    )
    async with serving(ft, base, policy=policy) as served:
        stream = await submit(served, "ft")
        text, _ = await stream.collect()

        assert (text, stream.answered_by) == (ft.reply, "ft")
        assert len(ft.requests) == 3 and base.requests == []
        assert len(pauses.seconds) == 2
        assert 0 <= pauses.seconds[0] <= 0.2 and 0 <= pauses.seconds[1] <= 0.3  # base, then 2x base capped
        assert served.fallbacks("ft", "ft", "error") == 2
        # Each retry is queued anew: its queue wait starts when it is queued, not at the first try.
        enqueued = [job.enqueued_at for job in stream.run.attempts]
        assert len(enqueued) == 3 and enqueued == sorted(enqueued) and enqueued[-1] > enqueued[0]


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    policy = RoutingPolicy(backoff_base_s=0.2, backoff_cap_s=2.0, jitter=lambda: 0.5)
    assert [policy.backoff_ceiling_s(retry) for retry in range(1, 6)] == [0.2, 0.4, 0.8, 1.6, 2.0]
    assert policy.backoff_s(3) == pytest.approx(0.4)
    spread = RoutingPolicy(backoff_base_s=1.0, backoff_cap_s=1.0)
    delays = [spread.backoff_s(1) for _ in range(200)]
    assert all(0 <= delay < 1.0 for delay in delays) and max(delays) - min(delays) > 0.5


async def test_retries_then_the_chain_then_the_last_error() -> None:
    ft, base = RoutedEngine("ft"), RoutedEngine("base")
    ft.failures = base.failures = 5
    policy = RoutingPolicy(fallbacks=CHAIN, max_retries=1, sleep=Pauses())
    async with serving(ft, base, policy=policy) as served:
        text, end = await (await submit(served, "ft")).collect()

        assert text == "" and (end.finish_reason, end.error) == ("error", "base failed")
        assert (len(ft.requests), len(base.requests)) == (2, 2)
        assert served.fallbacks("ft", "base", "error") == 1


async def test_a_full_queue_falls_back_at_submit() -> None:
    base = RoutedEngine("base")
    policy = RoutingPolicy(fallbacks=CHAIN)
    async with serving(base, policy=policy, idle=("ft",), max_queue_depth=1) as served:
        await served.broker.submit(Job(job_id="waiting", request=ask("ft")))  # no worker: ft's queue is full
        stream = await submit(served, "ft", cancel_on_close=False)
        text, _ = await stream.collect()

        assert (text, stream.answered_by) == (base.reply, "base")
        assert served.fallbacks("ft", "base", "overloaded") == 1
        # The refused job left no trace, so the queued one keeps the request's id: another
        # gateway (which knows nothing of this run) can read the answer by that id.
        assert base.requests[0].request_id == stream.job.job_id
        other_gateway = GenerationService(broker=served.broker, models=StaticModels([]), metrics=Metrics())
        assert (await other_gateway.attach(stream.job.job_id, "ft").collect())[0] == base.reply


async def test_overloaded_everywhere_is_refused_before_streaming() -> None:
    policy = RoutingPolicy(fallbacks=CHAIN, max_retries=1, sleep=Pauses())
    async with serving(policy=policy, idle=("ft", "base"), max_queue_depth=1) as served:
        await served.broker.submit(Job(job_id="w1", request=ask("ft")))
        await served.broker.submit(Job(job_id="w2", request=ask("base")))
        with pytest.raises(Overloaded):
            await served.generation.submit(ask("ft"), priority=Priority.API)
        assert served.fallbacks("ft", "ft", "overloaded") == 1
        assert served.fallbacks("ft", "base", "overloaded") == 1


async def test_models_not_served_are_skipped() -> None:
    ft, base = RoutedEngine("ft"), RoutedEngine("base")
    ft.failures = 1
    policy = RoutingPolicy(fallbacks={"ft": ("gone", "base")})
    async with serving(ft, base, policy=policy) as served:
        stream = await submit(served, "ft")
        await stream.collect()
        assert stream.answered_by == "base"


async def test_every_reader_follows_the_fallback() -> None:
    ft, base = RoutedEngine("ft", inter_token_s=0.01), RoutedEngine("base", inter_token_s=0.01)
    ft.first_token_delay_s = 30
    policy = RoutingPolicy(fallbacks=CHAIN, first_token_timeout_s=0.2)
    async with serving(ft, base, policy=policy) as served:
        stream = await submit(served, "ft", cancel_on_close=False)
        early = stream.another_reader()  # made before anything happened, like a chat client's reader
        kept, shown = await asyncio.gather(stream.collect(), early.collect())
        late = served.generation.attach(stream.job.job_id, "ft")  # a reconnecting client on this gateway

        assert kept == shown and kept[0] == base.reply
        assert (await late.collect())[0] == base.reply
        assert len(base.requests) == 1


async def test_resuming_after_an_entry_continues_the_answer_that_was_chosen() -> None:
    ft, base = RoutedEngine("ft"), RoutedEngine("base")
    ft.failures = 1
    async with serving(ft, base, policy=RoutingPolicy(fallbacks=CHAIN)) as served:
        stream = await submit(served, "ft", cancel_on_close=False)
        entries = [entry async for entry in stream.entries()]
        first = entries[0]
        resumed = served.generation.attach(stream.job.job_id, "ft", after=first.entry_id)
        rest = [entry async for entry in resumed.entries()]

        assert [entry.event for entry in rest] == [entry.event for entry in entries[1:]]


async def test_stopping_cancels_the_attempt_that_runs() -> None:
    ft, base = RoutedEngine("ft", inter_token_s=0.05), RoutedEngine("base", inter_token_s=0.05)
    ft.failures = 1
    base.reply = " ".join(["word"] * 200)
    async with serving(ft, base, policy=RoutingPolicy(fallbacks=CHAIN)) as served:
        stream = await submit(served, "ft", cancel_on_close=False)
        async with aclosing(stream.events()) as events:
            first = await anext(events)
            assert isinstance(first, TextDelta)
            await served.generation.cancel(stream.job.job_id)
            rest = [event async for event in events]
        end = rest[-1]
        assert isinstance(end, GenerationEnd) and end.finish_reason == "cancelled"
        assert base.cancelled == 1


async def test_a_client_leaving_cancels_the_request() -> None:
    ft = RoutedEngine("ft", inter_token_s=0.05)
    ft.reply = " ".join(["word"] * 200)
    async with serving(ft, policy=RoutingPolicy(max_retries=1)) as served:
        stream = await submit(served, "ft")
        async with aclosing(stream.events()) as events:
            await anext(events)
        for _ in range(100):
            if ft.cancelled:
                break
            await asyncio.sleep(0.01)
        assert ft.cancelled == 1


async def test_the_total_timeout_ends_the_answer_with_an_error_and_cancels_it() -> None:
    ft = RoutedEngine("ft", inter_token_s=0.05)
    ft.reply = " ".join(["word"] * 200)
    async with serving(ft, policy=RoutingPolicy(total_timeout_s=0.3)) as served:
        text, end = await (await submit(served, "ft")).collect()

        assert text.startswith("word") and len(text.split()) < 200
        assert end.finish_reason == "error" and end.error is not None and "0.3 s limit" in end.error
        assert end.usage.completion_tokens > 0
        assert ft.cancelled == 1


async def test_the_total_timeout_also_bounds_the_wait_for_a_first_token() -> None:
    ft = RoutedEngine("ft")
    ft.first_token_delay_s = 30
    async with serving(ft, policy=RoutingPolicy(total_timeout_s=0.2)) as served:
        text, end = await (await submit(served, "ft")).collect()

        assert text == "" and end.finish_reason == "error" and "limit" in (end.error or "")


async def test_the_inter_token_timeout_stops_a_stalled_answer() -> None:
    ft = RoutedEngine("ft", inter_token_s=30)
    async with serving(ft, policy=RoutingPolicy(inter_token_timeout_s=0.2)) as served:
        text, end = await (await submit(served, "ft")).collect()

        assert text == "Answer"
        assert end.finish_reason == "error" and "stopped responding" in (end.error or "")
        assert ft.cancelled == 1


async def test_aliases_resolve_to_their_model() -> None:
    ft = RoutedEngine("ft")
    policy = RoutingPolicy(aliases={"assistant": "ft"})
    async with serving(ft, policy=policy) as served:
        generation = served.generation
        assert generation.resolve_model("assistant").name == "ft"
        assert list(generation.list_aliases()) == ["assistant"]
        text, _ = await (await generation.submit(ask("assistant"), priority=Priority.API)).collect()
        assert text == ft.reply and ft.requests[0].model == "ft"
        with pytest.raises(ModelNotFound):
            generation.resolve_model("nothing")


def test_a_plain_request_needs_no_fallback_machinery() -> None:
    assert not RoutingPolicy().applies_to("m")
    assert RoutingPolicy(max_retries=1).applies_to("m")
    assert RoutingPolicy(fallbacks={"m": ("n",)}).applies_to("m")
    assert not RoutingPolicy(fallbacks={"m": ("n",)}).applies_to("n")
    assert RoutingPolicy(fallbacks={"m": ("n", "o")}, max_retries=1).max_attempts == 6


@asynccontextmanager
async def production_broker(amqp_url: str, redis_url: str, prefix: str) -> AsyncIterator[Broker]:
    """RabbitMQ jobs and Redis Streams, under a prefix of this test's own (removed afterwards)."""
    jobs = await RabbitJobQueue.open(
        amqp_url, prefix=prefix, max_queue_depth=64, job_ttl_s=30, heartbeat_s=10
    )
    streams = RedisStreams.from_url(
        redis_url, prefix=prefix, max_entries=1000, ttl_s=60, first_event_timeout_s=10, idle_timeout_s=10
    )
    try:
        yield Broker(jobs=jobs, streams=streams)
    finally:
        connection = await aio_pika.connect(amqp_url, timeout=5)
        async with connection:
            channel = await connection.channel()
            for name in (
                queue_name(prefix, "ft"),
                queue_name(prefix, "base"),
                dead_letter_queue_name(prefix),
            ):
                await channel.queue_delete(name)
            await channel.exchange_delete(f"{prefix}.dead")
        client = redis.asyncio.from_url(redis_url)
        async with client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)


@pytest.mark.redis
@pytest.mark.rabbitmq
async def test_fallbacks_on_rabbitmq_and_redis_streams(
    rabbitmq_server_url: str, redis_server_url: str, key_prefix: str
) -> None:
    ft, base = RoutedEngine("ft"), RoutedEngine("base")
    ft.failures = 1
    policy = RoutingPolicy(fallbacks=CHAIN, first_token_timeout_s=0.5)
    async with (
        production_broker(rabbitmq_server_url, redis_server_url, key_prefix) as broker,
        serving(ft, base, policy=policy, broker=broker) as served,
    ):
        stream = await submit(served, "ft", cancel_on_close=False)
        reader = stream.another_reader()
        (text, _), (shown, _) = await asyncio.gather(stream.collect(), reader.collect())
        assert text == shown == base.reply and stream.answered_by == "base"

        ft.first_token_delay_s = 30
        slow = await submit(served, "ft")
        text, _ = await slow.collect()
        assert text == base.reply and served.fallbacks("ft", "base", "timeout") == 1
