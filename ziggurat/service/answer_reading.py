"""What every kind of answer stream derives from its `entries()`: bare events, and the whole answer."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from ziggurat.connection.streams.base import StreamEntry
from ziggurat.errors import UpstreamFailed
from ziggurat.model.engine import GenerationEnd, GenerationEvent, TextDelta

NO_RESULT = "The generation ended without a result."


class ReadsAnswer:
    """Mixin for streams of one answer (a job's stream, a fallback run, a rate-limited wrapper)."""

    __slots__ = ()

    def entries(self) -> AsyncGenerator[StreamEntry, None]:
        raise NotImplementedError

    async def events(self) -> AsyncGenerator[GenerationEvent, None]:
        async with aclosing(self.entries()) as entries:
            async for entry in entries:
                yield entry.event

    async def collect(self) -> tuple[str, GenerationEnd]:
        """The whole answer and its end event, for non-streaming callers."""
        parts: list[str] = []
        async with aclosing(self.events()) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                else:
                    return "".join(parts), event
        raise UpstreamFailed(NO_RESULT)
