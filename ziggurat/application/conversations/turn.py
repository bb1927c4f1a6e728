"""One chat turn in flight: the stored user message, then the assistant reply as it streams.

The reply is persisted when the stream ends, however it ends: complete, failed,
or cut short because the client left or a stop request cancelled the job (the
partial text is kept as `cancelled`). That last write runs in a task the service owns and is awaited
through `asyncio.shield`, so the cancellation that a client disconnect
delivers cannot interrupt it halfway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ziggurat.application.conversations.context import ContextReport
from ziggurat.application.conversations.schemas import MessageOut
from ziggurat.errors import UpstreamFailed
from ziggurat.model.engine import GenerationEnd, TextDelta, Usage
from ziggurat.service.generation import GenerationStream

_FAILED = "The model failed while generating this answer."


@dataclass(slots=True, frozen=True)
class TurnEnd:
    """The stored reply, final: text, status, finish reason and usage."""

    message: MessageOut


TurnEvent = TextDelta | TurnEnd


@dataclass(slots=True, frozen=True)
class ReplyOutcome:
    text: str
    status: str
    finish_reason: str
    usage: Usage | None = None


FinishReply = Callable[[str, ReplyOutcome], Awaitable[MessageOut]]


def outcome_of(text: str, end: GenerationEnd | None) -> ReplyOutcome:
    """How a stream that ran to its end is stored."""
    if end is None:
        return ReplyOutcome(text, "error", "error")
    status = {"stop": "complete", "length": "complete", "cancelled": "cancelled"}.get(
        end.finish_reason, "error"
    )
    # A job dropped by a stop request ends without the engine's token counts.
    usage = None if end.finish_reason == "cancelled" else end.usage
    return ReplyOutcome(text, status, end.finish_reason, usage)


class ChatTurn:
    """Iterate `events()` once: `TextDelta`s, then one `TurnEnd` (or `UpstreamFailed` is raised).

    Leaving early cancels the generation and stores the partial reply. Call
    `aclose()` when done (it is idempotent): it also settles a turn whose
    events were never read.
    """

    def __init__(
        self,
        *,
        user_message: MessageOut,
        reply_id: str,
        stream: GenerationStream | None = None,
        finish: FinishReply | None = None,
        stored_reply: MessageOut | None = None,
        context: ContextReport | None = None,
    ) -> None:
        self.user_message = user_message
        self.reply_id = reply_id
        self.context = context
        self._stream = stream
        self._finish = finish
        self._stored_reply = stored_reply
        self._is_started = False

    @classmethod
    def replay(cls, user_message: MessageOut, reply: MessageOut) -> ChatTurn:
        """A turn that was already answered: its events replay the stored reply at once."""
        return cls(user_message=user_message, reply_id=reply.id, stored_reply=reply)

    @property
    def is_replay(self) -> bool:
        return self._stored_reply is not None

    async def events(self) -> AsyncGenerator[TurnEvent, None]:
        if self._is_started:
            raise RuntimeError("a chat turn's events can be read once")
        self._is_started = True
        if self._stored_reply is not None:
            if self._stored_reply.content:
                yield TextDelta(self._stored_reply.content)
            yield TurnEnd(self._stored_reply)
            return
        assert self._stream is not None and self._finish is not None
        parts: list[str] = []
        end: GenerationEnd | None = None
        outcome = ReplyOutcome("", "cancelled", "cancelled")
        events = self._stream.events()
        try:
            try:
                async for event in events:
                    if isinstance(event, TextDelta):
                        parts.append(event.text)
                        yield event
                    else:
                        end = event
            finally:
                # Closing the generation's stream at once (not at garbage collection) cancels the job.
                await _close(events)
            outcome = outcome_of("".join(parts), end)
        except (asyncio.CancelledError, GeneratorExit):
            outcome = ReplyOutcome("".join(parts), "cancelled", "cancelled")
            raise
        except BaseException:
            outcome = ReplyOutcome("".join(parts), "error", "error")
            raise
        finally:
            stored = await self._finish(self.reply_id, outcome)
        if outcome.status == "error":
            raise UpstreamFailed((end.error if end is not None else None) or _FAILED)
        yield TurnEnd(stored)

    async def aclose(self) -> None:
        if self._is_started:
            return
        self._is_started = True
        if self._stream is not None and self._finish is not None:
            await self._stream.cancel()
            await self._finish(self.reply_id, ReplyOutcome("", "cancelled", "cancelled"))


async def _close(iterator: AsyncIterator[object]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
