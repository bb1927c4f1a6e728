"""Draining: how a process stops without cutting a stream.

When a process is told to stop (SIGTERM; `connection/http/server.py` hooks
uvicorn's signal handling), it drains before it shuts down: `/readyz` answers
503 so load balancers stop sending it traffic, new generation requests are
refused with 503 + `Retry-After` (the retry lands on another replica), and the
streams already being served go on to their end for up to the grace period.
Workers stop taking jobs and finish, or release for another worker, the ones
they run.

This module holds the state only: it starts no task, knows no HTTP and no
worker; the server, the generation service and `app.py` act on it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from ziggurat.errors import ShuttingDown
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

RETRY_AFTER_S = 1.0
"""What a refused client is told: retry at once, another replica will answer."""


class Draining:
    """One process's shutdown state: not draining, then draining until the process exits.

    Invariants: draining never ends once begun, and its deadline (grace period
    from `begin`) never moves. `begin` may be called from any thread; the
    stream counting and the waits run on the event loop.
    """

    def __init__(self, *, grace_s: float = 30.0) -> None:
        self.grace_s = grace_s
        self._deadline: float | None = None
        self._streams = 0
        self._watched: list[Callable[[], int]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._lock = threading.Lock()

    @property
    def is_draining(self) -> bool:
        return self._deadline is not None

    @property
    def deadline(self) -> float:
        """`time.monotonic()` at which the grace period ends (a full period away while not draining)."""
        return self._deadline if self._deadline is not None else time.monotonic() + self.grace_s

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def watch(self, in_flight: Callable[[], int]) -> Callable[[], None]:
        """Wait for this work too (a worker's jobs, a socket's frames) before the server shuts down.

        Returns the function that stops watching it.
        """
        self._watched.append(in_flight)
        return lambda: self._watched.remove(in_flight)

    @property
    def in_flight(self) -> int:
        """Streams being served plus the watched work."""
        return self._streams + sum(count() for count in self._watched)

    @property
    def is_drained(self) -> bool:
        """Draining and nothing is left to wait for: nothing in flight, or the grace period is over."""
        return self.is_draining and (self.in_flight == 0 or self.remaining_s() == 0)

    def begin(self) -> None:
        """Start draining now (later calls do nothing)."""
        with self._lock:
            if self._deadline is not None:
                return
            self._deadline = time.monotonic() + self.grace_s
            waiters, self._waiters = self._waiters, []
        log.info("draining_started", grace_s=self.grace_s, in_flight=self.in_flight)
        for waiter in waiters:
            # Through the waiter's loop: `begin` may run on another thread than the one waiting.
            waiter.get_loop().call_soon_threadsafe(_wake, waiter)

    async def wait_begun(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._deadline is not None:
                return
            self._waiters.append(waiter)
        try:
            await waiter
        finally:
            with self._lock, suppress(ValueError):  # ValueError: `begin` took it already
                self._waiters.remove(waiter)

    def check_accepting(self) -> None:
        """Raise `ShuttingDown` (503 + Retry-After) once draining: new work belongs on another replica."""
        if self._deadline is not None:
            raise ShuttingDown(
                "This server is shutting down; retry the request and another server will answer it.",
                retry_after_s=RETRY_AFTER_S,
            )

    def stream_started(self) -> None:
        """Count a stream being served (pair with `stream_ended`): draining waits until none is left."""
        self._streams += 1

    def stream_ended(self) -> None:
        self._streams -= 1


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
