"""Writing and reading the audit log.

Events about a change are added with `AuditRepository.add` inside the same
transaction as the change, so the log and the data cannot disagree. Events
that change nothing else (a failed sign-in, a lockout) go through
`AuditLog.record`, which commits on its own. Every event carries the request
id of the call that caused it, which joins it to the access log (client IP,
user agent) without copying those here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.audit.models import AuditAction, AuditEvent
from ziggurat.application.audit.schemas import AuditEventOut, AuditPage
from ziggurat.application.auth.principal import Principal
from ziggurat.application.store.cursor import decode_cursor, encode_cursor
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import new_id, utcnow
from ziggurat.errors import Forbidden
from ziggurat.telemetry import get_logger, request_id_var

log = get_logger(__name__)


def audit_event(
    action: AuditAction,
    *,
    actor_id: str | None = None,
    user_id: str | None = None,
    ip: str | None = None,
    details: dict[str, object] | None = None,
) -> AuditEvent:
    return AuditEvent(
        id=new_id(),
        created_at=utcnow(),
        action=action.value,
        actor_id=actor_id,
        user_id=user_id,
        ip=ip,
        request_id=request_id_var.get(),
        details=details or {},
    )


@dataclass(slots=True, frozen=True)
class AuditFilter:
    user_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    def add(self, event: AuditEvent) -> None:
        """Queue the event in the caller's transaction; it is written when the caller commits."""
        self._session.add(event)

    async def search(
        self, where: AuditFilter, *, limit: int, before: tuple[datetime, str] | None
    ) -> list[AuditEvent]:
        query: Select[AuditEvent] = select(AuditEvent)
        if where.user_id is not None:
            query = query.where(
                or_(AuditEvent.user_id == where.user_id, AuditEvent.actor_id == where.user_id)
            )
        if where.action is not None:
            query = query.where(AuditEvent.action == where.action)
        if where.since is not None:
            query = query.where(AuditEvent.created_at >= where.since)
        if where.until is not None:
            query = query.where(AuditEvent.created_at < where.until)
        if before is not None:
            at, event_id = before
            query = query.where(
                or_(AuditEvent.created_at < at, and_(AuditEvent.created_at == at, AuditEvent.id < event_id))
            )
        rows = await self._session.scalars(
            query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit)
        )
        return list(rows)


class AuditLog:
    def __init__(self, *, database: Database) -> None:
        self._database = database

    async def record(
        self,
        action: AuditAction,
        *,
        actor_id: str | None = None,
        user_id: str | None = None,
        ip: str | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        """Write one event in a transaction of its own."""
        event = audit_event(action, actor_id=actor_id, user_id=user_id, ip=ip, details=details)
        async with self._database.session() as session:
            AuditRepository(session).add(event)
            await session.commit()

    async def search(
        self, principal: Principal, where: AuditFilter, *, limit: int, cursor: str | None = None
    ) -> AuditPage:
        """Events newest first; admins only."""
        if not principal.is_admin:
            raise Forbidden("Only administrators can read the audit log.")
        before = decode_cursor(cursor) if cursor else None
        where = AuditFilter(where.user_id, where.action, _as_utc(where.since), _as_utc(where.until))
        async with self._database.session() as session:
            rows = await AuditRepository(session).search(where, limit=limit + 1, before=before)
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
        return AuditPage(data=[AuditEventOut.model_validate(row) for row in page], next_cursor=next_cursor)


def _as_utc(moment: datetime | None) -> datetime | None:
    """A filter time; one without a zone is read as UTC, the zone every stored time is in."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
