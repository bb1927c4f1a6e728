"""An answer stream whose submitting reader holds a `LimitTicket` (what `submit` returns under limits).

Only this reader settles the ticket: `another_reader()` hands out plain
readers of the inner stream, so a chat reply read by its keeper and by the
client is charged once, when the keeper (the submitting reader) ends.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ziggurat.connection.broker.base import Job
from ziggurat.connection.streams.base import StreamEntry
from ziggurat.service.answer_reading import ReadsAnswer
from ziggurat.service.limits.ticket import LimitTicket

if TYPE_CHECKING:
    from ziggurat.service.answer_stream import AnswerStream


@dataclass(slots=True)
class LimitedStream(ReadsAnswer):
    inner: AnswerStream
    ticket: LimitTicket

    @property
    def job(self) -> Job:
        return self.inner.job

    @property
    def cache_status(self) -> str:
        return self.inner.cache_status

    @property
    def answered_by(self) -> str:
        return self.inner.answered_by

    @property
    def rate_limit(self) -> dict[str, str]:
        return self.ticket.headers

    def another_reader(self) -> AnswerStream:
        return self.inner.another_reader()

    def entries(self) -> AsyncGenerator[StreamEntry, None]:
        return self.ticket.track(self.inner.entries())

    async def cancel(self) -> None:
        await self.inner.cancel()
