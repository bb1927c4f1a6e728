"""The worker: capacity, cancellation, failures, and taking over a job another worker left."""

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

from tests.brokers import memory_broker, running_worker
from ziggurat.connection.broker.base import Job, Priority
from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.streams.base import Chunk
from ziggurat.connection.worker import JobOutcome, WorkerTelemetry
from ziggurat.model.engine import (
    ChatMessage,
    GenerationEnd,
    GenerationEvent,
    GenerationRequest,
    ModelInfo,
    SamplingParams,
    TextDelta,
)
from ziggurat.model.engines.demo import DemoEngine, compose_reply

PROMPT = "tell me about ziggurats"


def job(job_id: str, *, model: str = "demo", max_tokens: int | None = None) -> Job:
    request = GenerationRequest(
        request_id=job_id,
        model=model,
        messages=(ChatMessage("user", PROMPT),),
        params=SamplingParams(max_tokens=max_tokens),
    )
    return Job(job_id=job_id, request=request, priority=Priority.API)


def demo(capacity: int, inter_token_s: float) -> DemoEngine:
    return DemoEngine(
        served_name="demo",
        capacity=capacity,
        time_to_first_token_s=0,
        inter_token_s=inter_token_s,
        default_max_tokens=512,
    )


async def read_all(broker: Broker, job_id: str) -> tuple[str, GenerationEnd]:
    text: list[str] = []
    async for entry in broker.read(job_id):
        if isinstance(entry.event, TextDelta):
            text.append(entry.event.text)
        else:
            return "".join(text), entry.event
    raise AssertionError("no end")


async def test_worker_never_runs_more_jobs_than_capacity() -> None:
    broker = memory_broker()
    engine = demo(capacity=2, inter_token_s=0.01)
    for index in range(5):
        await broker.submit(job(f"j{index}"))
    async with running_worker(broker, engine):
        await asyncio.sleep(0.05)
        assert engine.active_count == 2
        assert broker.queue_depth("demo") == 3


async def test_cancel_frees_the_slot_for_the_next_job() -> None:
    broker = memory_broker()
    engine = demo(capacity=1, inter_token_s=0.02)
    async with running_worker(broker, engine) as worker:
        await broker.submit(job("first"))
        await broker.submit(job("second"))
        entries = broker.read("first")
        assert isinstance((await anext(entries)).event, TextDelta)
        await broker.cancel("first")
        _, end = await read_all(broker, "first")
        assert end.finish_reason == "cancelled"
        _, second = await read_all(broker, "second")
        assert second.finish_reason == "stop"
        assert engine.cancelled_count == 1
        assert worker.cancelled_count == 1


async def test_a_job_cancelled_while_queued_never_runs() -> None:
    broker = memory_broker()
    engine = demo(capacity=1, inter_token_s=0)
    await broker.submit(job("gone"))
    await broker.cancel("gone")
    _, end = await read_all(broker, "gone")
    assert end.finish_reason == "cancelled"
    async with running_worker(broker, engine):
        await broker.submit(job("next"))
        await read_all(broker, "next")
    assert engine.started_count == 1


async def test_a_redelivered_job_continues_after_the_text_already_streamed() -> None:
    """The first worker 'died' after streaming part of the answer; the next one finishes it seamlessly."""
    broker = memory_broker()
    full = compose_reply(PROMPT, seed=None)
    claim = await broker.streams.claim("resumed")
    assert claim.status == "run" and claim.epoch == 1
    head = full[: full.index("## A") + 4]  # ends inside a word: the successor must not repeat it
    await broker.streams.append({"resumed": (1, [Chunk(head, 7)])})
    await broker.submit(job("resumed"))  # the redelivery
    async with running_worker(broker, demo(capacity=1, inter_token_s=0)) as worker:
        text, end = await read_all(broker, "resumed")
    assert text == full
    assert end.finish_reason == "stop"
    assert worker.resumed_count == 1
    assert end.usage.completion_tokens >= 7


async def test_the_old_worker_is_fenced_out_once_another_claims_the_job() -> None:
    broker = memory_broker()
    first = await broker.streams.claim("j")
    second = await broker.streams.claim("j")
    statuses = await broker.streams.append({"j": (first.epoch, [Chunk("stale", 1)])})
    assert statuses["j"].value == "fenced"
    assert (await broker.streams.append({"j": (second.epoch, [Chunk("fresh", 1)])}))["j"].value == "ok"


async def test_after_max_deliveries_the_job_is_dead_lettered_with_a_clear_error() -> None:
    broker = memory_broker()
    for _ in range(3):
        await broker.streams.claim("cursed")  # three workers took it and died
    await broker.submit(job("cursed"))
    async with running_worker(broker, demo(capacity=1, inter_token_s=0), max_deliveries=3):
        _, end = await read_all(broker, "cursed")
    assert end.finish_reason == "error"
    assert end.error is not None and "3 times" in end.error
    assert [j.job_id for j in broker.jobs.dead_letters] == ["cursed"]  # type: ignore[attr-defined]


async def test_a_stopping_worker_releases_its_jobs_for_another_worker() -> None:
    broker = memory_broker()
    async with running_worker(broker, demo(capacity=1, inter_token_s=0.01)):
        await broker.submit(job("handover"))
        entries = broker.read("handover")
        first = await anext(entries)
        assert isinstance(first.event, TextDelta)
    # The first worker stopped mid-answer; the job is back in the queue.
    assert broker.queue_depth("demo") == 1
    async with running_worker(broker, demo(capacity=1, inter_token_s=0)) as successor:
        rest = [entry async for entry in entries]
    text = first.event.text + "".join(e.event.text for e in rest if isinstance(e.event, TextDelta))
    assert text == compose_reply(PROMPT, seed=None)
    assert successor.resumed_count == 1


async def test_a_draining_worker_finishes_its_jobs_and_takes_no_more() -> None:
    broker = memory_broker()
    async with running_worker(broker, demo(capacity=1, inter_token_s=0.002)) as worker:
        await broker.submit(job("running"))
        entries = broker.read("running")
        first = await anext(entries)
        await broker.submit(job("queued"))
        await worker.drain(deadline=time.monotonic() + 30)
        assert (worker.active_jobs, worker.completed_count) == (0, 1)
        assert broker.queue_depth("demo") == 1  # not taken: it is another worker's to run
    rest = [entry async for entry in entries]
    assert isinstance(first.event, TextDelta)
    text = first.event.text + "".join(e.event.text for e in rest if isinstance(e.event, TextDelta))
    assert text == compose_reply(PROMPT, seed=None)


async def test_a_draining_worker_releases_what_outlasts_the_grace_period() -> None:
    broker = memory_broker()
    async with running_worker(broker, demo(capacity=1, inter_token_s=0.01)) as worker:
        await broker.submit(job("long"))
        entries = broker.read("long")
        first = await anext(entries)
        await worker.drain(deadline=time.monotonic() + 0.05)
        assert (worker.active_jobs, worker.completed_count) == (0, 0)
    assert broker.queue_depth("demo") == 1  # released: back in the queue
    async with running_worker(broker, demo(capacity=1, inter_token_s=0)) as successor:
        rest = [entry async for entry in entries]
    assert isinstance(first.event, TextDelta)
    text = first.event.text + "".join(e.event.text for e in rest if isinstance(e.event, TextDelta))
    assert text == compose_reply(PROMPT, seed=None)
    assert successor.resumed_count == 1


class FailingEngine:
    info = ModelInfo(name="broken", engine="test")
    capacity = 1
    is_ready = True

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        yield TextDelta("partial")
        raise KeyError("engine bug")


async def test_engine_crash_becomes_an_error_event() -> None:
    broker = memory_broker()
    async with running_worker(broker, FailingEngine()):  # type: ignore[arg-type]
        await broker.submit(job("x", model="broken"))
        text, end = await read_all(broker, "x")
    assert text == "partial"
    assert end.finish_reason == "error"
    assert end.error and "engine bug" not in end.error


class RecordingObserver:
    def __init__(self) -> None:
        self.claims: list[tuple[str, Priority, float | None]] = []
        self.outcomes: list[tuple[str, str]] = []

    def job_claimed(self, model: str, priority: Priority, queue_wait_s: float | None) -> None:
        self.claims.append((model, priority, queue_wait_s))

    def job_settled(self, model: str, outcome: JobOutcome) -> None:
        self.outcomes.append((model, outcome))


async def test_the_worker_reports_queue_wait_and_how_each_job_ended() -> None:
    broker = memory_broker()
    observer = RecordingObserver()
    telemetry = WorkerTelemetry(observer=observer)
    queued_long_ago = dataclasses.replace(job("waited"), enqueued_at=time.time() - 30)
    await broker.submit(queued_long_ago)
    await broker.submit(job("untimed"))  # from a gateway that does not say when it queued the job
    async with running_worker(broker, demo(capacity=1, inter_token_s=0), telemetry=telemetry):
        await read_all(broker, "waited")
        await read_all(broker, "untimed")
        await broker.submit(dataclasses.replace(job("stopped"), enqueued_at=time.time()))
        entries = broker.read("stopped")
        await anext(entries)
        await broker.cancel("stopped")
        assert (await read_all(broker, "stopped"))[1].finish_reason == "cancelled"
    [(model, priority, waited), (_, _, untimed), (_, _, quick)] = observer.claims
    assert (model, priority) == ("demo", Priority.API)
    assert waited is not None and waited >= 30
    assert untimed is None
    assert quick is not None and 0 <= quick < 30
    assert observer.outcomes == [("demo", "completed"), ("demo", "completed"), ("demo", "cancelled")]


async def test_a_released_job_is_reported_and_its_takeover_adds_no_queue_wait() -> None:
    broker = memory_broker()
    observer = RecordingObserver()
    telemetry = WorkerTelemetry(observer=observer)
    async with running_worker(broker, demo(capacity=1, inter_token_s=0.01), telemetry=telemetry):
        await broker.submit(dataclasses.replace(job("handover"), enqueued_at=time.time()))
        entries = broker.read("handover")
        await anext(entries)
    async with running_worker(broker, demo(capacity=1, inter_token_s=0), telemetry=telemetry):
        _ = [entry async for entry in entries]
    assert len(observer.claims) == 1  # the second claim's wait would count the first worker's time
    assert observer.outcomes == [("demo", "released"), ("demo", "completed")]
