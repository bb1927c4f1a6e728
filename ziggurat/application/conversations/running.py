"""Replies being generated in this process, so a stop request from any connection can reach them.

A reply is registered before its placeholder row is committed and leaves when
its final state is stored, so there is no moment at which a stop request sees
a `streaming` row that is running here but cannot find it. A stop that
arrives before the job is even submitted is remembered and applied the moment
the job exists.

Only this process's replies are here: that covers every reply while the
in-process broker is the only one (a split gateway/worker deployment needs a
shared broker, whose cancel reaches the worker wherever it runs).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ziggurat.application.conversations.schemas import MessageOut
from ziggurat.errors import Conflict
from ziggurat.service.generation import GenerationStream


@dataclass(slots=True)
class _RunningReply:
    stored: asyncio.Future[MessageOut | None]
    stream: GenerationStream | None = None
    is_stop_requested: bool = False


class RunningReplies:
    def __init__(self) -> None:
        self._replies: dict[str, _RunningReply] = {}

    def __contains__(self, reply_id: str) -> bool:
        return reply_id in self._replies

    def begin(self, reply_id: str) -> None:
        """Register a reply about to be generated; `Conflict` if this process already generates it."""
        if reply_id in self._replies:
            raise Conflict("The reply to this message is still being generated; retry once it has finished.")
        self._replies[reply_id] = _RunningReply(stored=asyncio.get_running_loop().create_future())

    async def attach(self, reply_id: str, stream: GenerationStream) -> None:
        """The reply's job was submitted; cancel it at once if a stop came first."""
        reply = self._replies.get(reply_id)
        if reply is None:
            return
        reply.stream = stream
        if reply.is_stop_requested:
            await stream.cancel()

    def end(self, reply_id: str, stored: MessageOut | None) -> None:
        """The reply's final state is stored (None: storing it failed)."""
        reply = self._replies.pop(reply_id, None)
        if reply is not None and not reply.stored.done():
            reply.stored.set_result(stored)

    async def stop(self, reply_id: str, *, timeout_s: float) -> MessageOut | None:
        """Cancel a reply running here and return it as stored; None if it is not running here."""
        reply = self._replies.get(reply_id)
        if reply is None:
            return None
        reply.is_stop_requested = True
        if reply.stream is not None:
            await reply.stream.cancel()
        try:
            return await asyncio.wait_for(asyncio.shield(reply.stored), timeout=timeout_s)
        except TimeoutError:
            return None
