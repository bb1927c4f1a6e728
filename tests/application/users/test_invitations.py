"""Invitations: one email, one use, until expiry or revocation; admins only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.application.conftest import register
from ziggurat.application.container import Application
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import utcnow
from ziggurat.application.users.models import Invitation
from ziggurat.application.users.schemas import InvitationCreate
from ziggurat.errors import Forbidden, InvalidRequest


async def test_an_expired_or_revoked_invitation_admits_nobody(
    application: Application, database: Database
) -> None:
    admin = await register(application, "root@example.com")
    expired = await application.invitations.create(admin, InvitationCreate(email="a@example.com"))
    revoked = await application.invitations.create(admin, InvitationCreate(email="b@example.com"))
    async with database.session() as session:
        await session.execute(
            update(Invitation).where(Invitation.id == expired.id).values(expires_at=utcnow() - timedelta(1))
        )
        await session.commit()
    await application.invitations.revoke(admin, revoked.id)
    await application.invitations.revoke(admin, revoked.id)

    with pytest.raises(Forbidden, match="invalid"):
        await application.users.register("a@example.com", "correct horse", invitation=expired.token)
    with pytest.raises(Forbidden, match="invalid"):
        await application.users.register("b@example.com", "correct horse", invitation=revoked.token)
    statuses = {
        item.email: item.status for item in await application.invitations.list_invitations(admin, limit=10)
    }
    assert statuses == {"a@example.com": "expired", "b@example.com": "revoked"}


async def test_only_admins_invite_and_only_to_existing_roles(application: Application) -> None:
    admin = await register(application, "root@example.com")
    user = await register(application, "u@example.com")
    with pytest.raises(Forbidden):
        await application.invitations.create(user, InvitationCreate(email="x@example.com"))
    with pytest.raises(InvalidRequest):
        await application.invitations.create(admin, InvitationCreate(email="x@example.com", role="nope"))
