"""Invitations: an admin invites one email address, with a role, until an expiry.

The invitation's token is a 256-bit secret shown once, at creation (the admin
passes it on; sending mail is not ziggurat's job). Registering with it works
even while registration is closed, for that email only, once. Revoking is
idempotent; a used invitation stays listed as `accepted`.
"""

from __future__ import annotations

from datetime import timedelta

from ziggurat.application.audit.log import AuditRepository, audit_event
from ziggurat.application.audit.models import AuditAction
from ziggurat.application.auth.principal import Principal
from ziggurat.application.auth.tokens import digest, new_secret
from ziggurat.application.roles.service import find_policy
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.application.users.models import Invitation
from ziggurat.application.users.repository import InvitationRepository
from ziggurat.application.users.schemas import (
    InvitationCreate,
    InvitationCreated,
    InvitationOut,
    InvitationStatus,
)
from ziggurat.application.users.service import normalize_email
from ziggurat.errors import Forbidden, InvalidRequest, NotFound

_NOT_FOUND = "No invitation with this id."


def invitation_out(row: Invitation) -> InvitationOut:
    status: InvitationStatus = "pending"
    if row.accepted_at is not None:
        status = "accepted"
    elif row.revoked_at is not None:
        status = "revoked"
    elif row.expires_at <= utcnow():
        status = "expired"
    return InvitationOut(
        id=row.id,
        email=row.email,
        role=row.role,
        status=status,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        accepted_at=row.accepted_at,
        accepted_by=row.accepted_by,
        revoked_at=row.revoked_at,
    )


class InvitationService:
    def __init__(self, *, database: Database, default_ttl_s: int) -> None:
        self._database = database
        self._default_ttl = timedelta(seconds=default_ttl_s)

    async def create(self, principal: Principal, request: InvitationCreate) -> InvitationCreated:
        _require_admin(principal)
        email = normalize_email(request.email)
        ttl = timedelta(hours=request.expires_in_hours) if request.expires_in_hours else self._default_ttl
        token = new_secret()
        now = utcnow()
        row = Invitation(
            id=new_id(),
            email=email,
            role=request.role,
            token_hash=digest(token),
            created_by=principal.user_id,
            created_at=now,
            expires_at=now + ttl,
        )
        async with self._database.session() as session:
            if await find_policy(session, request.role) is None:
                raise InvalidRequest("No role with this name.", param="role")
            await InvitationRepository(session).add(row)
            AuditRepository(session).add(
                audit_event(
                    AuditAction.INVITATION_CREATED,
                    actor_id=principal.user_id,
                    details={"invitation_id": row.id, "email": email, "role": row.role},
                )
            )
            await session.commit()
        return InvitationCreated(**invitation_out(row).model_dump(), token=token)

    async def list_invitations(self, principal: Principal, *, limit: int) -> list[InvitationOut]:
        _require_admin(principal)
        async with self._database.session() as session:
            rows = await InvitationRepository(session).list_recent(limit=limit)
        return [invitation_out(row) for row in rows]

    async def get(self, principal: Principal, invitation_id: str) -> InvitationOut:
        _require_admin(principal)
        async with self._database.session() as session:
            row = await InvitationRepository(session).get(invitation_id)
        if row is None:
            raise NotFound(_NOT_FOUND, param="invitation_id")
        return invitation_out(row)

    async def revoke(self, principal: Principal, invitation_id: str) -> None:
        _require_admin(principal)
        async with self._database.session() as session:
            row = await InvitationRepository(session).get(invitation_id)
            if row is None:
                raise NotFound(_NOT_FOUND, param="invitation_id")
            if row.revoked_at is None and row.accepted_at is None:
                row.revoked_at = utcnow()
                AuditRepository(session).add(
                    audit_event(
                        AuditAction.INVITATION_REVOKED,
                        actor_id=principal.user_id,
                        details={"invitation_id": row.id, "email": row.email},
                    )
                )
                await session.commit()


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only administrators can manage invitations.")
