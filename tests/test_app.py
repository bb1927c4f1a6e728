"""The composition root: background maintenance the server runs on its own."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from tests.connection.http.inprocess import app_client, app_settings, cheap_passwords, sign_up
from ziggurat.app import build_app
from ziggurat.application.conversations.models import Conversation
from ziggurat.application.store.orm import utcnow
from ziggurat.connection.http.deps import Services


async def test_server_purges_conversations_deleted_past_retention(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_passwords(monkeypatch)
    settings = app_settings(
        tmp_path,
        database_url,
        conversations={"auto_title": False, "purge_interval_s": 0.05, "deleted_retention_days": 30},
    )
    app = build_app(settings)
    async with app_client(app) as client:
        alice = await sign_up(client, "alice@example.com")
        ids = [
            (await client.post("/api/conversations", json={}, headers=alice.headers)).json()["id"]
            for _ in range(3)
        ]
        for conversation_id in ids[:2]:
            assert (
                await client.delete(f"/api/conversations/{conversation_id}", headers=alice.headers)
            ).is_success
        services: Services = app.state.services
        database = services.application.database
        async with database.session() as session:
            # One deletion is old enough to purge, the other is recent and must stay.
            await session.execute(
                update(Conversation)
                .where(Conversation.id == ids[0])
                .values(deleted_at=utcnow() - timedelta(days=31))
            )
            await session.commit()

        async def remaining() -> set[str]:
            async with database.session() as session:
                return set((await session.scalars(select(Conversation.id))).all())

        for _ in range(100):
            if ids[0] not in await remaining():
                break
            await asyncio.sleep(0.05)
        assert await remaining() == {ids[1], ids[2]}
        async with database.session() as session:
            assert await session.scalar(select(func.count()).select_from(Conversation)) == 2
