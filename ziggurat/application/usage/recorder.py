"""`UsageRecorder`: the hook the generation paths call when a generation ends.

`record` only appends to an in-memory buffer (no I/O on the request path, and
nothing a client disconnect can cancel halfway); a flusher task it owns writes
the buffer in one multi-row INSERT after `flush_interval_s`, or sooner when
`max_batch` rows are waiting. The buffer is bounded: if the database falls
behind by more than `max_buffer` rows, the newest are dropped and counted in
the log rather than growing memory without limit. `aclose()` writes what is
left, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from ziggurat.application.auth.principal import Principal
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.application.usage.models import UsageEvent
from ziggurat.model.engine import Usage
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

UsageSource = Literal["api", "chat"]


class UsageRecorder:
    def __init__(
        self,
        *,
        database: Database,
        flush_interval_s: float = 1.0,
        max_batch: int = 500,
        max_buffer: int = 100_000,
    ) -> None:
        self._database = database
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._max_buffer = max_buffer
        self._buffer: list[dict[str, object]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._dropped = 0

    def record(self, principal: Principal, model: str, usage: Usage, *, source: UsageSource = "api") -> None:
        if len(self._buffer) >= self._max_buffer:
            self._dropped += 1
            return
        now = utcnow()
        self._buffer.append(
            {
                "id": new_id(),
                "user_id": principal.user_id,
                "api_key_id": principal.api_key_id,
                "model": model,
                "source": source,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "day": now.date(),
                "created_at": now,
            }
        )
        if len(self._buffer) >= self._max_batch:
            self._wake.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon(), name="usage-flush")
            self._flusher.add_done_callback(_log_failure)

    async def flush(self) -> None:
        """Write everything buffered now (tests, shutdown)."""
        while self._buffer:
            batch, self._buffer = self._buffer[: self._max_batch], self._buffer[self._max_batch :]
            try:
                async with self._database.session() as session:
                    await session.execute(insert(UsageEvent), batch)
                    await session.commit()
            except SQLAlchemyError as exc:
                # Usage is bookkeeping: losing a batch must not break serving, but it must be seen.
                log.error("usage_write_failed", rows=len(batch), error_type=type(exc).__name__)
        if self._dropped:
            log.warning("usage_rows_dropped", rows=self._dropped)
            self._dropped = 0

    async def _flush_soon(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=self._flush_interval_s)
        except TimeoutError:
            pass
        self._wake.clear()
        await self.flush()

    async def aclose(self) -> None:
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            # Wake it rather than cancel it: a cancelled flush would lose the batch it holds.
            self._wake.set()
            await asyncio.wait([flusher])
        await self.flush()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("usage_flush_failed", error_type=type(task.exception()).__name__)
