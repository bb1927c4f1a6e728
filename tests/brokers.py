"""In-process brokers and workers for tests that need a real job path without a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from ziggurat.connection.broker.broker import Broker
from ziggurat.connection.broker.memory import MemoryJobQueue
from ziggurat.connection.streams.memory import MemoryStreams
from ziggurat.connection.streams.publisher import StreamPublisher
from ziggurat.connection.worker import Worker, WorkerTelemetry
from ziggurat.model.engine import Engine


def memory_broker(
    *, max_queue_depth: int = 64, first_event_timeout_s: float = 30.0, idle_timeout_s: float = 30.0
) -> Broker:
    streams = MemoryStreams(
        max_entries=10_000,
        ttl_s=600,
        first_event_timeout_s=first_event_timeout_s,
        idle_timeout_s=idle_timeout_s,
    )
    return Broker(jobs=MemoryJobQueue(max_queue_depth=max_queue_depth), streams=streams)


@asynccontextmanager
async def running_worker(
    broker: Broker,
    engine: Engine,
    *,
    flush_interval_s: float = 0.0,
    max_deliveries: int = 3,
    telemetry: WorkerTelemetry | None = None,
) -> AsyncIterator[Worker]:
    """A worker serving `engine`'s model from `broker` until the block ends."""
    publisher = StreamPublisher(broker.streams, flush_interval_s=flush_interval_s)
    worker = Worker(
        jobs=broker.jobs,
        streams=broker.streams,
        publisher=publisher,
        engine=engine,
        model=engine.info.name,
        max_deliveries=max_deliveries,
        telemetry=telemetry,
    )
    runner = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        runner.cancel()
        with suppress(asyncio.CancelledError):
            await runner
        await publisher.aclose()
