"""Role management (admins) and role lookup (the authenticator, user admin).

Rules: built-in roles cannot be deleted and `admin` always keeps the `admin`
permission, so a server can never lose its last way in; a custom role cannot
be deleted while users hold it. Every change evicts the cached credential
checks of that role's users, so new permissions apply at once in this
process (other replicas within the credential cache TTL).
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ziggurat.application.audit.log import AuditRepository, audit_event
from ziggurat.application.audit.models import AuditAction, AuditEvent
from ziggurat.application.auth.credential_cache import CredentialCache
from ziggurat.application.auth.principal import SCOPE_ADMIN, Principal, Quota
from ziggurat.application.roles.models import Role
from ziggurat.application.roles.policy import BUILTIN_ROLES, ROLE_ADMIN, RolePolicy, policy_of
from ziggurat.application.roles.repository import RoleRepository
from ziggurat.application.roles.schemas import QUOTA_FIELDS, RoleCreate, RoleOut, RoleUpdate
from ziggurat.application.store.database import Database
from ziggurat.application.store.orm import utcnow
from ziggurat.errors import Conflict, Forbidden, InvalidRequest, NotFound

_NOT_FOUND = "No role with this name."


def role_out(name: str, row: Role | None) -> RoleOut:
    policy = policy_of(name, row)
    return RoleOut(
        name=name,
        description=row.description if row is not None else f"Built-in role `{name}`.",
        permissions=sorted(policy.permissions),
        allowed_models=sorted(policy.allowed_models),
        **_quota_fields(policy.quota),
        is_builtin=name in BUILTIN_ROLES,
        created_at=row.created_at if row is not None else None,
        updated_at=row.updated_at if row is not None else None,
    )


async def find_policy(session: AsyncSession, name: str) -> RolePolicy | None:
    """The policy of an existing role (built-in or stored), None for an unknown name."""
    row = await RoleRepository(session).get(name)
    if row is None and name not in BUILTIN_ROLES:
        return None
    return policy_of(name, row)


async def admin_role_names(session: AsyncSession) -> set[str]:
    """Every role whose policy grants `admin` now."""
    names = {name for name, policy in BUILTIN_ROLES.items() if policy.is_admin}
    for row in await RoleRepository(session).list_all():
        if policy_of(row.name, row).is_admin:
            names.add(row.name)
        else:
            names.discard(row.name)
    return names


class RoleService:
    def __init__(self, *, database: Database, credential_cache: CredentialCache) -> None:
        self._database = database
        self._credential_cache = credential_cache

    async def list_roles(self, principal: Principal) -> list[RoleOut]:
        _require_admin(principal)
        async with self._database.session() as session:
            rows = {row.name: row for row in await RoleRepository(session).list_all()}
        names = sorted(set(BUILTIN_ROLES) | set(rows))
        return [role_out(name, rows.get(name)) for name in names]

    async def get(self, principal: Principal, name: str) -> RoleOut:
        _require_admin(principal)
        async with self._database.session() as session:
            row = await RoleRepository(session).get(name)
        if row is None and name not in BUILTIN_ROLES:
            raise NotFound(_NOT_FOUND, param="name")
        return role_out(name, row)

    async def create(self, principal: Principal, request: RoleCreate) -> RoleOut:
        _require_admin(principal)
        if request.name in BUILTIN_ROLES:
            raise Conflict("A built-in role has this name; change it with PATCH instead.", param="name")
        now = utcnow()
        row = Role(
            name=request.name,
            description=request.description,
            permissions=sorted(set(request.permissions)),
            allowed_models=sorted(set(request.allowed_models)),
            **{field: getattr(request, field) for field in QUOTA_FIELDS},
            created_at=now,
            updated_at=now,
        )
        async with self._database.session() as session:
            if await RoleRepository(session).get(request.name) is not None:
                raise Conflict("A role with this name already exists.", param="name")
            try:
                await RoleRepository(session).add(row)
                AuditRepository(session).add(_role_event(AuditAction.ROLE_CREATED, principal, row))
                await session.commit()
            except IntegrityError as exc:
                raise Conflict("A role with this name already exists.", param="name") from exc
        return role_out(row.name, row)

    async def update(self, principal: Principal, name: str, request: RoleUpdate) -> RoleOut:
        _require_admin(principal)
        changes = request.model_dump(exclude_unset=True)
        if "permissions" in changes and changes["permissions"] is None:
            raise InvalidRequest("permissions cannot be null.", param="permissions")
        if "allowed_models" in changes and changes["allowed_models"] is None:
            raise InvalidRequest("allowed_models cannot be null.", param="allowed_models")
        if name == ROLE_ADMIN and SCOPE_ADMIN not in changes.get("permissions", [SCOPE_ADMIN]):
            raise Conflict("The admin role always keeps the admin permission.", param="permissions")
        async with self._database.session() as session:
            roles = RoleRepository(session)
            row = await roles.get(name)
            if row is None:
                if name not in BUILTIN_ROLES:
                    raise NotFound(_NOT_FOUND, param="name")
                row = _row_from_builtin(BUILTIN_ROLES[name])
                await roles.add(row)
            for field, value in changes.items():
                if value is not None and field in ("permissions", "allowed_models"):
                    value = sorted(set(value))
                if value is not None or field in QUOTA_FIELDS:
                    setattr(row, field, value)
            row.updated_at = utcnow()
            AuditRepository(session).add(_role_event(AuditAction.ROLE_UPDATED, principal, row))
            await session.commit()
        self._credential_cache.evict_role(name)
        return role_out(name, row)

    async def delete(self, principal: Principal, name: str) -> None:
        _require_admin(principal)
        if name in BUILTIN_ROLES:
            raise Conflict("Built-in roles cannot be deleted.", param="name")
        async with self._database.session() as session:
            roles = RoleRepository(session)
            row = await roles.get(name)
            if row is None:
                raise NotFound(_NOT_FOUND, param="name")
            if await roles.count_users(name):
                raise Conflict("Users still hold this role; give them another role first.", param="name")
            await roles.delete(row)
            AuditRepository(session).add(_role_event(AuditAction.ROLE_DELETED, principal, row))
            await session.commit()
        self._credential_cache.evict_role(name)


def _row_from_builtin(policy: RolePolicy) -> Role:
    now = utcnow()
    return Role(
        name=policy.name,
        description=f"Built-in role `{policy.name}`.",
        permissions=sorted(policy.permissions),
        allowed_models=sorted(policy.allowed_models),
        **_quota_fields(policy.quota),
        created_at=now,
        updated_at=now,
    )


def _role_event(action: AuditAction, principal: Principal, row: Role) -> AuditEvent:
    return audit_event(
        action,
        actor_id=principal.user_id,
        details={
            "role": row.name,
            "permissions": list(row.permissions),
            "allowed_models": list(row.allowed_models),
            **{field: getattr(row, field) for field in QUOTA_FIELDS},
        },
    )


def _quota_fields(quota: Quota) -> dict[str, int | None]:
    return {field: getattr(quota, field) for field in QUOTA_FIELDS}


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only administrators can manage roles.")
