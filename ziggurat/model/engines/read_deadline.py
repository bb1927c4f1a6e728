"""A deadline on the reads of one stream that costs two attribute stores per read.

`asyncio.timeout` would do, but rescheduling it around every read of a token
stream cancels one timer and pushes another onto the event loop's heap twice per
token: 5% of a busy gateway's CPU in profiles (bench/gateway_overhead.py). Here a
single timer per stream re-arms itself lazily (`ziggurat/lazy_deadline.py`): when
it fires before the deadline (the deadline moved on since), it sleeps again until
the new one; when it fires past the deadline while the stream is reading, it
cancels the reading task, and `reading()` turns that cancellation into
`TimeoutError`. While the consumer holds a value (the stream is not reading),
nothing fires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from ziggurat.lazy_deadline import LazyDeadline


class ReadDeadline(LazyDeadline):
    """Arm with `set(deadline)` before each read; wrap the reading loop in `with guard.reading():`."""

    __slots__ = ("_expired", "_task", "is_reading")

    def __init__(self) -> None:
        super().__init__(asyncio.get_running_loop())
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("ReadDeadline must be created inside a task")
        self._task = task
        self._expired = False
        self.is_reading = False

    def set(self, deadline: float) -> None:
        """The moment the next read must have returned by."""
        self.is_reading = True
        self.move_to(deadline)

    def done(self) -> None:
        """A read returned: no deadline until the next `set`."""
        self.is_reading = False

    def _is_pending(self) -> bool:
        return self.is_reading

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Turns this guard's own cancellation into `TimeoutError`; other cancellations pass through."""
        try:
            yield
        except asyncio.CancelledError:
            if self._expired and self._task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self.close()
