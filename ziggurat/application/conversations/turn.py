"""One chat turn as a client sees it: the stored user message, then the reply as it streams.

The turn only reads: the reply's keeper (`keeper.py`) stores it when the
stream ends, however it ends (complete, failed, or stopped: the partial text
is kept as `cancelled`), whether or not the client is still there. A client
that drops resumes with a turn made by `ChatService.resume` on any gateway.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

from ziggurat.application.conversations.context import ContextReport
from ziggurat.application.conversations.schemas import MessageOut
from ziggurat.errors import UpstreamFailed
from ziggurat.model.engine import GenerationEnd, TextDelta, Usage
from ziggurat.service.answer_stream import AnswerStream

_FAILED = "The model failed while generating this answer."


@dataclass(slots=True, frozen=True)
class TurnEnd:
    """The stored reply, final: text, status, finish reason and usage."""

    message: MessageOut


@dataclass(slots=True, frozen=True)
class ReplyOutcome:
    text: str
    status: str
    finish_reason: str
    usage: Usage | None = None
    model: str | None = None
    """The model that answered, when a fallback made it another than the reply's."""


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


@dataclass(slots=True, frozen=True)
class TurnDelta:
    """A piece of the reply and the stream entry it came from (the id a client resumes after)."""

    text: str
    entry_id: str


TurnEvent = TurnDelta | TurnEnd

WaitStored = Callable[[], Awaitable[MessageOut]]


class ChatTurn:
    """Iterate `events()` once: `TurnDelta`s, then one `TurnEnd` (or `UpstreamFailed` is raised).

    The reply is generated and stored whether or not anyone reads the events:
    leaving early only stops this reader (the stop endpoint cancels a reply).
    `user_message` is None for a resumed stream.
    """

    def __init__(
        self,
        *,
        user_message: MessageOut | None,
        reply_id: str,
        stream: AnswerStream | None = None,
        wait_stored: WaitStored | None = None,
        stored_reply: MessageOut | None = None,
        context: ContextReport | None = None,
        replay_text: bool = True,
    ) -> None:
        self.user_message = user_message
        self.reply_id = reply_id
        self.context = context
        self._stream = stream
        self._wait_stored = wait_stored
        self._stored_reply = stored_reply
        self._replay_text = replay_text
        self._is_started = False

    @classmethod
    def replay(
        cls, user_message: MessageOut | None, reply: MessageOut, *, with_text: bool = True
    ) -> ChatTurn:
        """A turn already answered: its events give the stored reply at once (`with_text`: as a delta too)."""
        return cls(user_message=user_message, reply_id=reply.id, stored_reply=reply, replay_text=with_text)

    @property
    def is_replay(self) -> bool:
        return self._stored_reply is not None

    async def events(self) -> AsyncGenerator[TurnEvent, None]:
        if self._is_started:
            raise RuntimeError("a chat turn's events can be read once")
        self._is_started = True
        if self._stored_reply is not None:
            if self._stored_reply.content and self._replay_text:
                yield TurnDelta(self._stored_reply.content, "0-0")
            yield TurnEnd(self._stored_reply)
            return
        assert self._stream is not None and self._wait_stored is not None
        end: GenerationEnd | None = None
        async with aclosing(self._stream.entries()) as entries:
            async for entry in entries:
                if isinstance(entry.event, TextDelta):
                    yield TurnDelta(entry.event.text, entry.entry_id)
                else:
                    end = entry.event
        stored = await self._wait_stored()
        if stored.status == "error":
            raise UpstreamFailed((end.error if end is not None else None) or _FAILED)
        yield TurnEnd(stored)

    async def aclose(self) -> None:
        """Nothing to settle: the reply's keeper stores it. Kept for callers that close turns."""
        self._is_started = True
