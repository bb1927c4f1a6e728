"""One admitted generation's hold on its limits, from admission until its submitting reader ends.

The ticket charged an estimate at admission; `track` wraps the submitting
reader's entries, notes the real usage from the end event (or the text seen,
when the reader leaves first), renews the concurrency slot's lease while the
stream lasts, and settles when the reader ends, however it ends: the token
difference is charged or refunded and the slot is released. `abandon` settles
a request that never started (refused by the queue, or its chat turn could
not be stored): tokens are refunded, the request still counts as made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Coroutine, Sequence
from contextlib import aclosing
from typing import Any

from ziggurat.connection.streams.base import StreamEntry
from ziggurat.model.engine import GenerationEnd, Usage
from ziggurat.service.limits.base import RateLimiter
from ziggurat.service.limits.policy import Bucket, charged_tokens
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

_settling: set[asyncio.Task[None]] = set()


class LimitTicket:
    def __init__(
        self,
        *,
        limiter: RateLimiter,
        buckets: Sequence[Bucket],
        ticket: str,
        estimate: int,
        prompt_estimate: int,
        headers: dict[str, str],
        lease_s: float,
    ) -> None:
        self.headers = headers
        """The `x-ratelimit-*` headers as of admission."""
        self.estimate = estimate
        self._limiter = limiter
        self._buckets = tuple(buckets)
        self._ticket = ticket
        self._prompt_estimate = prompt_estimate
        self._lease_s = lease_s
        self._has_slot = any(bucket.kind == "concurrent_streams" for bucket in self._buckets)
        self._renew_at = time.monotonic() + lease_s / 3
        self._usage: Usage | None = None
        self._seen_completion = 0
        self._is_settled = False

    async def track(self, entries: AsyncGenerator[StreamEntry, None]) -> AsyncGenerator[StreamEntry, None]:
        try:
            async with aclosing(entries) as source:
                async for entry in source:
                    if isinstance(entry.event, GenerationEnd):
                        self._usage = entry.event.usage
                    else:
                        self._seen_completion += entry.tokens
                    if self._has_slot and time.monotonic() >= self._renew_at:
                        self._renew_at = time.monotonic() + self._lease_s / 3
                        await self._limiter.settle(
                            self._buckets,
                            ticket=self._ticket,
                            token_delta=0,
                            slot="renew",
                            lease_s=self._lease_s,
                        )
                    yield entry
        finally:
            await self._run_to_end(self.settle())

    async def settle(self) -> None:
        """Charge the real usage (as far as it is known) and release the slot. Idempotent."""
        usage = self._usage
        prompt = usage.prompt_tokens if usage is not None else 0
        completion = usage.completion_tokens if usage is not None else self._seen_completion
        await self._settle(charged_tokens(self._prompt_estimate, prompt=prompt, completion=completion))

    async def abandon(self) -> None:
        """The generation never started: refund its tokens and free its slot."""
        await self._run_to_end(self._settle(0))

    async def _settle(self, charged: int) -> None:
        if self._is_settled:
            return
        self._is_settled = True
        delta = charged - self.estimate if self.estimate else 0
        try:
            await self._limiter.settle(
                self._buckets, ticket=self._ticket, token_delta=delta, slot="release", lease_s=self._lease_s
            )
        except Exception as exc:  # a slot not released lapses with its lease; nothing else is at stake
            log.warning("rate_limit_settle_failed", error_type=type(exc).__name__)

    async def _run_to_end(self, settling: Coroutine[Any, Any, None]) -> None:
        """Settle in a task of its own: the reader that ends may itself be being cancelled.

        An in-process limiter settles without suspending, so nothing can interrupt it and
        it runs right here: a task per request spared.
        """
        if self._limiter.settles_inline:
            await settling
            return
        task = asyncio.get_running_loop().create_task(settling)
        _settling.add(task)
        task.add_done_callback(_settling.discard)
        await asyncio.shield(task)
