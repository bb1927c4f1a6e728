"""User administration: list and search, change role or standing, export and hard delete.

Rules: the server always keeps at least one active user whose role grants
`admin` (the last one cannot be disabled, demoted or deleted); disabling an
account ends all its sessions at once; a new role must exist. Every change
writes an audit event in the same transaction and evicts the user's cached
credential checks.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.admin.export import collect_user_data
from ziggurat.application.admin.schemas import UserExport, UserPage, UserUpdate
from ziggurat.application.audit.log import AuditRepository, audit_event
from ziggurat.application.audit.models import AuditAction
from ziggurat.application.auth.principal import Principal
from ziggurat.application.auth.sessions import SessionService
from ziggurat.application.roles.repository import RoleRepository
from ziggurat.application.roles.service import admin_role_names, find_policy
from ziggurat.application.store.cursor import decode_cursor, encode_cursor
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import utcnow
from ziggurat.application.users.models import User
from ziggurat.application.users.repository import UserRepository
from ziggurat.application.users.schemas import UserOut
from ziggurat.errors import Conflict, Forbidden, InvalidRequest, NotFound
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

_NOT_FOUND = "No user with this id."


class AdminUserService:
    def __init__(self, *, database: Database, sessions: SessionService) -> None:
        self._database = database
        self._sessions = sessions

    async def list_users(
        self, principal: Principal, *, limit: int, cursor: str | None = None, email: str | None = None
    ) -> UserPage:
        """Users newest first; `email` keeps those whose address contains it."""
        _require_admin(principal)
        before = decode_cursor(cursor) if cursor else None
        fragment = email.strip().lower() if email else None
        async with self._database.session() as session:
            rows = await UserRepository(session).search(
                email_contains=fragment, limit=limit + 1, before=before
            )
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return UserPage(data=[UserOut.model_validate(row) for row in page], next_cursor=next_cursor)

    async def get(self, principal: Principal, user_id: str) -> UserOut:
        _require_admin(principal)
        async with self._database.session() as session:
            user = await _existing(session, user_id)
        return UserOut.model_validate(user)

    async def update(self, principal: Principal, user_id: str, request: UserUpdate) -> UserOut:
        _require_admin(principal)
        async with self._database.session() as session:
            user = await _existing(session, user_id)
            audit = AuditRepository(session)
            new_role = request.role if request.role not in (None, user.role) else None
            new_active = request.is_active if request.is_active not in (None, user.is_active) else None
            if new_role is not None and await find_policy(session, new_role) is None:
                raise InvalidRequest("No role with this name.", param="role")
            if new_role is not None or new_active is False:
                await _keep_an_admin(
                    session, user, new_role=new_role or user.role, stays_active=new_active is not False
                )
            if new_role is not None:
                audit.add(
                    audit_event(
                        AuditAction.USER_ROLE_CHANGED,
                        actor_id=principal.user_id,
                        user_id=user.id,
                        details={"from": user.role, "to": new_role},
                    )
                )
                user.role = new_role
            if new_active is not None:
                user.is_active = new_active
                if not new_active:
                    await self._sessions.end_all(session, user)
                action = AuditAction.USER_ENABLED if new_active else AuditAction.USER_DISABLED
                audit.add(audit_event(action, actor_id=principal.user_id, user_id=user.id))
            await session.commit()
        self._sessions.evict(user_id)
        return UserOut.model_validate(user)

    async def export(self, principal: Principal, user_id: str) -> UserExport:
        _require_admin(principal)
        async with self._database.session() as session:
            user = await _existing(session, user_id)
            tables = await collect_user_data(session, user_id)
            AuditRepository(session).add(
                audit_event(AuditAction.USER_EXPORTED, actor_id=principal.user_id, user_id=user_id)
            )
            await session.commit()
        return UserExport(exported_at=utcnow(), user=UserOut.model_validate(user), tables=tables)

    async def delete(self, principal: Principal, user_id: str) -> None:
        """Delete the account and everything that belongs to it; the audit log keeps the fact."""
        _require_admin(principal)
        async with self._database.session() as session:
            user = await _existing(session, user_id)
            await _keep_an_admin(session, user, new_role=None, stays_active=False)
            await UserRepository(session).delete(user)
            AuditRepository(session).add(
                audit_event(AuditAction.USER_DELETED, actor_id=principal.user_id, user_id=user_id)
            )
            await session.commit()
        self._sessions.evict(user_id)
        log.info("user_deleted", user_id=user_id)


async def _existing(session: AsyncSession, user_id: str) -> User:
    user = await UserRepository(session).get(user_id)
    if user is None:
        raise NotFound(_NOT_FOUND, param="user_id")
    return user


async def _keep_an_admin(
    session: AsyncSession, user: User, *, new_role: str | None, stays_active: bool
) -> None:
    """Refuse a change that would leave no active administrator."""
    admin_roles = await admin_role_names(session)
    if not (user.is_active and user.role in admin_roles):
        return
    if stays_active and new_role in admin_roles:
        return
    if await RoleRepository(session).count_active_users_in(admin_roles, excluding=user.id) == 0:
        raise Conflict("This is the last active administrator; make someone else an administrator first.")


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only administrators can manage users.")
