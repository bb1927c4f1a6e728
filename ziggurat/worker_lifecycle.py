"""How a process runs its in-process worker: the engine starts off the request path, then the
worker serves jobs until shutdown drains it.

The app's lifespan (`app.py`) decides whether a process has a worker at all; this module
only runs one. Draining itself (stop pulling, finish or release jobs) is the worker's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine

from ziggurat.cancellation import cancel_and_wait
from ziggurat.connection.worker import Worker
from ziggurat.errors import ConfigurationError
from ziggurat.model.engine import Engine
from ziggurat.service.lifecycle import Draining
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

FatalHandler = Callable[[str], None]
Advertiser = Callable[[Engine], Coroutine[None, None, None]] | None
"""Tells the gateways of a split deployment what this worker serves, while it lives (None: one process)."""


async def start_and_run_worker(
    engine: Engine, worker: Worker, on_fatal: FatalHandler, advertise: Advertiser = None
) -> None:
    """Load the model off the request path, then serve jobs; readiness flips when loaded."""
    try:
        await engine.start()
    except ConfigurationError as exc:
        log.error("engine_failed_to_start", model=engine.info.name, error=str(exc))
        on_fatal(str(exc))
        return
    log.info("engine_ready", model=engine.info.name, engine=engine.info.engine)
    if advertise is None:
        await worker.run()
        return
    advertising = asyncio.create_task(advertise(engine))
    try:
        await worker.run()
    finally:
        await cancel_and_wait(advertising)


async def drain_when_asked(worker: Worker, draining: Draining) -> None:
    await draining.wait_begun()
    await worker.drain(deadline=draining.deadline)


async def stop_worker(worker: Worker, draining: Draining, is_shared_queue: bool) -> None:
    """At shutdown: jobs from a shared queue get what is left of the grace period, then go back to it.

    In one process the streams that read them have ended (or were cut) by
    now, so they are released at once.
    """
    draining.begin()  # a no-op after SIGTERM; otherwise (plain uvicorn, tests) shutdown starts it
    await worker.drain(deadline=draining.deadline if is_shared_queue else 0.0)
