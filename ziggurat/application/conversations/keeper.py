"""Keepers: the gateway-side tasks that store each reply when its stream ends, whoever is listening.

A chat reply is detached from the connection that asked for it: the client may
drop, reconnect through another gateway and resume, while the gateway that
submitted the job reads the job's stream to its end and stores the reply.
That gateway holds a lease on the reply and renews it; if it dies, the lease
lapses and another gateway's recovery sweep adopts the reply, reads the
(replayable) stream from the start and stores it. Storing is conditional on
the row still being `streaming` for that job, so a reply is stored once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass, field

from ziggurat.application.conversations.schemas import MessageOut
from ziggurat.application.conversations.turn import ReplyOutcome, outcome_of
from ziggurat.cancellation import cancel_and_wait
from ziggurat.connection.leases import Leases
from ziggurat.model.engine import GenerationEnd, TextDelta
from ziggurat.service.answer_stream import AnswerStream
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

StoreReply = Callable[[str, str, ReplyOutcome], Awaitable[MessageOut | None]]
"""(reply id, job id, outcome) → the reply as stored (None: it no longer exists)."""


@dataclass(slots=True)
class _Kept:
    task: asyncio.Task[None]
    stored: asyncio.Future[MessageOut | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ReplyKeeper:
    """Owns one task per reply this gateway keeps; `aclose()` hands them over (or settles them)."""

    def __init__(
        self,
        *,
        leases: Leases,
        holder: str,
        store: StoreReply,
        lease_ttl_s: float,
        is_shared: bool,
    ) -> None:
        self._leases = leases
        self._holder = holder
        self._store = store
        self._lease_ttl_s = lease_ttl_s
        self._is_shared = is_shared
        self._kept: dict[str, _Kept] = {}

    def __contains__(self, reply_id: str) -> bool:
        return reply_id in self._kept

    @property
    def kept_count(self) -> int:
        return len(self._kept)

    async def keep(self, reply_id: str, stream: AnswerStream, *, lease_taken: bool = False) -> None:
        """Start storing `reply_id` from `stream` when it ends (this gateway holds the lease)."""
        if reply_id in self._kept:
            return
        if not lease_taken:
            await self._leases.acquire(reply_id, self._holder, self._lease_ttl_s)
        task = asyncio.create_task(self._run(reply_id, stream), name=f"keep-reply-{reply_id}")
        self._kept[reply_id] = _Kept(task)

    async def adopt(self, reply_id: str, stream: AnswerStream) -> bool:
        """Keep a reply whose gateway went away, if no other gateway has adopted it first."""
        if reply_id in self._kept:
            return False
        if not await self._leases.acquire(reply_id, self._holder, self._lease_ttl_s):
            return False
        log.info("reply_adopted", message_id=reply_id, job_id=stream.job.job_id)
        await self.keep(reply_id, stream, lease_taken=True)
        return True

    async def wait_stored(self, reply_id: str, timeout_s: float) -> MessageOut | None:
        """The reply as stored by this gateway; None when it is not kept here or not stored in time."""
        kept = self._kept.get(reply_id)
        if kept is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(kept.stored), timeout_s)
        except TimeoutError:
            return None

    async def _run(self, reply_id: str, stream: AnswerStream) -> None:
        renewer = asyncio.create_task(self._renew(reply_id))
        kept = self._kept[reply_id]
        parts: list[str] = []
        stored: MessageOut | None = None
        try:
            end: GenerationEnd | None = None
            try:
                async with aclosing(stream.entries()) as entries:
                    async for entry in entries:
                        if isinstance(entry.event, TextDelta):
                            parts.append(entry.event.text)
                        else:
                            end = entry.event
                outcome = outcome_of("".join(parts), end)
                if stream.answered_by != stream.job.request.model:
                    outcome = dataclasses.replace(outcome, model=stream.answered_by)
            except asyncio.CancelledError:
                if self._is_shared:
                    raise  # another gateway adopts it once our lease lapses
                # Nobody else can finish it: keep what was generated, marked as cut short.
                outcome = ReplyOutcome("".join(parts), "cancelled", "cancelled")
            except Exception as exc:
                log.exception("reply_stream_failed", message_id=reply_id, error_type=type(exc).__name__)
                outcome = ReplyOutcome("".join(parts), "error", "error")
            stored = await self._store(reply_id, stream.job.job_id, outcome)
        finally:
            await cancel_and_wait(renewer)
            if not kept.stored.done():
                kept.stored.set_result(stored)
            self._kept.pop(reply_id, None)
            with suppress(Exception):
                await self._leases.release(reply_id, self._holder)

    async def _renew(self, reply_id: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl_s / 3)
            try:
                if not await self._leases.renew(reply_id, self._holder, self._lease_ttl_s):
                    log.warning("reply_lease_lost", message_id=reply_id)
            except Exception as exc:  # Redis hiccup: try again next round
                log.warning("reply_lease_renew_failed", message_id=reply_id, error_type=type(exc).__name__)

    async def aclose(self) -> None:
        """Stop keeping: shared deployments hand replies over to other gateways; one process stores them."""
        tasks = [kept.task for kept in self._kept.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
