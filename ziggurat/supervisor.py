"""Owner of long-lived background tasks (workers, model loading).

Keeps a reference to every task, logs a failure the moment it happens (instead of
when someone finally awaits it), and cancels and awaits them all on shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ziggurat.cancellation import cancel_and_wait
from ziggurat.telemetry import get_logger

log = get_logger(__name__)


class Supervisor:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error(
                "background_task_failed",
                task=task.get_name(),
                error_type=type(error).__name__,
                error=str(error),
            )

    async def aclose(self) -> None:
        await cancel_and_wait(*self._tasks)
