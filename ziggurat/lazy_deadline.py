"""A deadline that moves often and fires rarely: one timer, re-armed lazily.

Moving an `asyncio` timer means cancelling one handle and pushing another onto
the event loop's heap. A deadline that moves on every token or every write (a
stream's read deadline, a reader's idle timeout) would pay that each time. Here
moving the deadline later only stores it; the one timer fires at the moment it
was armed for, and re-arms itself for the current deadline if that moved on
since. Moving it earlier re-arms at once. Subclasses say whether anything is
waiting on the deadline (`_is_pending`) and what expiry does (`_expire`).
"""

from __future__ import annotations

import asyncio


class LazyDeadline:
    __slots__ = ("_armed_at", "_handle", "deadline", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self.deadline = 0.0

    def move_to(self, deadline: float) -> None:
        """The new deadline; touches the timer only when it would otherwise fire late."""
        self.deadline = deadline
        if self._handle is None or deadline < self._armed_at:
            self._arm(deadline)

    def close(self) -> None:
        """No timer left behind."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, moment: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = moment
        self._handle = self.loop.call_at(moment, self._check)

    def _check(self) -> None:
        self._handle = None
        if not self._is_pending():
            return  # nothing waits now: the next `move_to` arms afresh
        if self.loop.time() < self.deadline:
            self._arm(self.deadline)
        else:
            self._expire()

    def _is_pending(self) -> bool:
        raise NotImplementedError

    def _expire(self) -> None:
        raise NotImplementedError
