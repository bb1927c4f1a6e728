"""`FallbackStream`: one reader of a `FallbackRun`, with the interface of `GenerationStream`.

`GenerationService.submit` returns one when a request may be retried, fall
back or time out at the gateway. Each reader reads the attempts' streams
itself (so readers stay independent, as with `GenerationStream`) and follows
the run's decisions: it waits for an attempt's first entry, or for the run to
give that attempt up (another reader saw an error, or a deadline passed), and
moves on to the next attempt with the others. Everything it yields comes from
the one attempt that answered, so entry ids stay valid for resuming after
them. `another_reader()` shares the run, so a reader made before a fallback
follows it too.

It deliberately holds no decision of its own: see `attempts.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ziggurat.connection.broker.base import Job
from ziggurat.connection.streams.base import StreamEntry
from ziggurat.model.engine import GenerationEnd, GenerationEvent, Usage
from ziggurat.service.answer_reading import ReadsAnswer
from ziggurat.service.routing.attempts import FallbackRun

if TYPE_CHECKING:
    from ziggurat.service.answer_stream import CacheStore, GenerationStream

_NO_RESULT = "The generation ended without a result."
_FINAL_ENTRY_ID = "0-0"


@dataclass(slots=True)
class FallbackStream(ReadsAnswer):
    """A reader of `run`: iterate once. Leaving early cancels the request when `cancel_on_close`.

    `attempt_reader` is a `GenerationStream` used as a template for reading one
    attempt (its job, `after` and cache hook are swapped per attempt; it never
    cancels: the run does). `is_observed` and `cache_store` mean what they mean
    for `GenerationStream`; answers are stored in the response cache only when
    the requested model gave them.
    """

    run: FallbackRun
    attempt_reader: GenerationStream
    after: str | None = None
    cancel_on_close: bool = True
    is_observed: bool = True
    cache_store: CacheStore | None = None
    last_entry_id: str | None = None

    @property
    def job(self) -> Job:
        """The request's own job (its id is the one stored, stopped and resumed), whoever answers."""
        return self.run.job

    @property
    def answered_by(self) -> str:
        """The model that answered (the latest one tried, until one answers)."""
        return self.run.answered_by

    @property
    def cache_status(self) -> str:
        return "miss" if self.cache_store is not None else "bypass"

    @property
    def rate_limit(self) -> dict[str, str]:
        return {}

    def another_reader(self) -> FallbackStream:
        """An independent reader of the same answer from its start (it never cancels the request)."""
        return dataclasses.replace(
            self, after=None, cancel_on_close=False, is_observed=False, cache_store=None, last_entry_id=None
        )

    async def entries(self) -> AsyncGenerator[StreamEntry, None]:
        run = self.run
        index = run.start_index()
        after = self.after if index == run.committed else None
        is_finished = False
        try:
            while True:
                async with aclosing(self._reader_of(index, after).entries()) as entries:
                    first = await self._first_entry(index, entries)
                    if first is not None and self._answers(index, first.event):
                        # The answering attempt, relayed as it comes (set `is_finished` before
                        # yielding the end: a reader may stop there, and must not cancel then).
                        entry, count = self._relayed(first, 1), 1
                        is_finished = isinstance(entry.event, GenerationEnd)
                        yield entry
                        if not is_finished:
                            async for entry in entries:
                                count += 1
                                entry = self._relayed(entry, count)
                                is_finished = isinstance(entry.event, GenerationEnd)
                                yield entry
                                if is_finished:
                                    break
                        return
                following = await self._next_attempt(index, first)
                if following is None:
                    is_finished = True
                    end = run.final_end or GenerationEnd("error", Usage(0, 0), _NO_RESULT)
                    yield StreamEntry(_FINAL_ENTRY_ID, end)
                    return
                index, after = following, None
        finally:
            if not is_finished and self.cancel_on_close:
                run.cancel()

    async def cancel(self) -> None:
        await self.run.stop()

    def _reader_of(self, index: int, after: str | None) -> GenerationStream:
        job = self.run.attempts[index]
        is_requested_model = job.request.model == self.run.job.request.model
        return dataclasses.replace(
            self.attempt_reader,
            job=job,
            after=after,
            cancel_on_close=False,
            is_observed=self.is_observed,
            cache_store=self.cache_store if is_requested_model else None,
            last_entry_id=None,
        )

    async def _first_entry(
        self, index: int, entries: AsyncGenerator[StreamEntry, None]
    ) -> StreamEntry | None:
        """Attempt `index`'s first entry, or None once the run has given that attempt up.

        The read runs in this task and is interrupted (cancelled) when the run gives the
        attempt up: a task and an `asyncio.wait` per request cost more than the read. The
        deadline (`wait_for_first`) is a timer that asks the run what to do (`on_deadline`),
        which gives the attempt up or moves its deadline.
        """
        run = self.run
        outcome = run.outcome(index)
        if outcome.done():
            return None
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        waiting = True
        interrupted = False

        def interrupt(_: object = None) -> None:
            nonlocal interrupted
            # `waiting`: the callback may run after the read returned (it was already scheduled).
            if waiting and not interrupted:
                interrupted = True
                task.cancel()

        def arm() -> None:
            nonlocal timer
            timeout = run.wait_for_first(index)
            timer = None if timeout is None else loop.call_later(timeout, on_deadline)

        def on_deadline() -> None:
            if waiting:
                run.on_deadline(index)
                arm()

        outcome.add_done_callback(interrupt)
        arm()
        try:
            return await _next_entry(entries)
        except asyncio.CancelledError:
            if interrupted and task.uncancel() == 0:
                return None
            raise
        finally:
            waiting = False
            outcome.remove_done_callback(interrupt)
            if timer is not None:
                timer.cancel()

    def _answers(self, index: int, event: GenerationEvent) -> bool:
        """Whether attempt `index`, whose first event (for this reader) is `event`, is the answer."""
        if isinstance(event, GenerationEnd) and event.finish_reason == "error":
            return self.run.committed == index
        return self.run.commit(index)

    async def _next_attempt(self, index: int, first: StreamEntry | None) -> int | None:
        """The index of the attempt after `index` once the run has started it; None when it gave up."""
        run = self.run
        outcome: asyncio.Future[Job | None] | None = None
        if first is not None and isinstance(first.event, GenerationEnd) and not run.is_left(index):
            outcome = run.leave(index, "error", first.event)
        if outcome is None:
            outcome = run.outcome(index)
        job = await asyncio.shield(outcome)
        return index + 1 if job is not None else None

    def _relayed(self, entry: StreamEntry, count: int) -> StreamEntry:
        """The answering attempt's `count`-th entry as readers get it (a gateway timeout rewrites the end)."""
        run = self.run
        if run.watches_gaps:
            run.saw(count)
        self.last_entry_id = entry.entry_id
        if isinstance(entry.event, GenerationEnd):
            return dataclasses.replace(entry, event=run.final(entry.event))
        return entry


async def _next_entry(entries: AsyncGenerator[StreamEntry, None]) -> StreamEntry:
    entry = await anext(entries, None)
    if entry is None:  # streams always end with an end event; a reader that did not is a failure
        return StreamEntry(_FINAL_ENTRY_ID, GenerationEnd("error", Usage(0, 0), _NO_RESULT))
    return entry
