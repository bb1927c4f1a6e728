"""Usage rows are buffered off the request path and written in batches; nothing is lost on close."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.application.conftest import register
from ziggurat.application.container import Application
from ziggurat.application.store.database import Database
from ziggurat.application.usage.models import UsageEvent
from ziggurat.application.usage.recorder import UsageRecorder
from ziggurat.model.engine import Usage


async def _count(database: Database) -> int:
    async with database.session() as session:
        return await session.scalar(select(func.count()).select_from(UsageEvent)) or 0


async def test_records_are_written_in_a_batch_and_on_close(
    application: Application, database: Database
) -> None:
    user = await register(application, "u@example.com")
    recorder = UsageRecorder(database=database, flush_interval_s=60, max_batch=3)
    recorder.record(user, "m", Usage(5, 7))
    assert await _count(database) == 0  # nothing written on the request path
    await recorder.aclose()
    assert await _count(database) == 1


async def test_a_full_batch_is_written_without_waiting(application: Application, database: Database) -> None:
    user = await register(application, "u@example.com")
    recorder = UsageRecorder(database=database, flush_interval_s=60, max_batch=2)
    recorder.record(user, "m", Usage(1, 1))
    recorder.record(user, "m", Usage(1, 1), source="chat")
    await recorder._flusher  # type: ignore[misc]
    assert await _count(database) == 2
    await recorder.aclose()


async def test_the_buffer_is_bounded(application: Application, database: Database) -> None:
    user = await register(application, "u@example.com")
    recorder = UsageRecorder(database=database, flush_interval_s=60, max_batch=100, max_buffer=3)
    for _ in range(10):
        recorder.record(user, "m", Usage(1, 1))
    await recorder.aclose()
    assert await _count(database) == 3
