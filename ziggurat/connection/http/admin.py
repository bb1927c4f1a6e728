"""Administration under `/api/admin`: users, roles, invitations, usage, model registry, audit log.

Every route requires the `admin` permission (`AdminPrincipalDep`, 403
otherwise); the services check it again, so no caller can skip it. Lists of
users and audit events are cursor-paginated, newest first.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from ziggurat.application.admin.schemas import UserExport, UserPage, UserUpdate
from ziggurat.application.audit.log import AuditFilter
from ziggurat.application.audit.schemas import AuditPage
from ziggurat.application.catalog.schemas import (
    ModelEntryCreate,
    ModelEntryList,
    ModelEntryOut,
    ModelEntryUpdate,
)
from ziggurat.application.roles.schemas import RoleCreate, RoleList, RoleOut, RoleUpdate
from ziggurat.application.store.orm import utcnow
from ziggurat.application.usage.report import UsageGrouping, UsageReport
from ziggurat.application.users.schemas import (
    InvitationCreate,
    InvitationCreated,
    InvitationList,
    InvitationOut,
    UserOut,
)
from ziggurat.connection.http.deps import AdminPrincipalDep, ApplicationDep

router = APIRouter(prefix="/api/admin", tags=["admin"])

MAX_PAGE_SIZE = 100
ResourceId = Annotated[str, Path(min_length=1, max_length=64)]
RoleName = Annotated[str, Path(min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Cursor = Annotated[str | None, Query(max_length=512)]
Filter = Annotated[str | None, Query(min_length=1, max_length=320)]


@router.get("/users")
async def list_users(
    principal: AdminPrincipalDep,
    application: ApplicationDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    email: Filter = None,
) -> UserPage:
    return await application.admin_users.list_users(principal, limit=limit, cursor=cursor, email=email)


@router.get("/users/{user_id}")
async def get_user(user_id: ResourceId, principal: AdminPrincipalDep, application: ApplicationDep) -> UserOut:
    return await application.admin_users.get(principal, user_id)


@router.patch("/users/{user_id}")
async def update_user(
    user_id: ResourceId, body: UserUpdate, principal: AdminPrincipalDep, application: ApplicationDep
) -> UserOut:
    return await application.admin_users.update(principal, user_id, body)


@router.delete("/users/{user_id}", status_code=204)
async def delete_user(
    user_id: ResourceId, principal: AdminPrincipalDep, application: ApplicationDep
) -> Response:
    await application.admin_users.delete(principal, user_id)
    return Response(status_code=204)


@router.get("/users/{user_id}/export")
async def export_user(
    user_id: ResourceId, principal: AdminPrincipalDep, application: ApplicationDep
) -> UserExport:
    return await application.admin_users.export(principal, user_id)


@router.get("/roles")
async def list_roles(principal: AdminPrincipalDep, application: ApplicationDep) -> RoleList:
    return RoleList(data=await application.roles.list_roles(principal))


@router.post("/roles", status_code=201)
async def create_role(body: RoleCreate, principal: AdminPrincipalDep, application: ApplicationDep) -> RoleOut:
    return await application.roles.create(principal, body)


@router.get("/roles/{name}")
async def get_role(name: RoleName, principal: AdminPrincipalDep, application: ApplicationDep) -> RoleOut:
    return await application.roles.get(principal, name)


@router.patch("/roles/{name}")
async def update_role(
    name: RoleName, body: RoleUpdate, principal: AdminPrincipalDep, application: ApplicationDep
) -> RoleOut:
    return await application.roles.update(principal, name, body)


@router.delete("/roles/{name}", status_code=204)
async def delete_role(name: RoleName, principal: AdminPrincipalDep, application: ApplicationDep) -> Response:
    await application.roles.delete(principal, name)
    return Response(status_code=204)


@router.get("/invitations")
async def list_invitations(
    principal: AdminPrincipalDep, application: ApplicationDep, limit: Limit = 100
) -> InvitationList:
    return InvitationList(data=await application.invitations.list_invitations(principal, limit=limit))


@router.post("/invitations", status_code=201)
async def create_invitation(
    body: InvitationCreate, principal: AdminPrincipalDep, application: ApplicationDep
) -> InvitationCreated:
    return await application.invitations.create(principal, body)


@router.get("/invitations/{invitation_id}")
async def get_invitation(
    invitation_id: ResourceId, principal: AdminPrincipalDep, application: ApplicationDep
) -> InvitationOut:
    return await application.invitations.get(principal, invitation_id)


@router.delete("/invitations/{invitation_id}", status_code=204)
async def revoke_invitation(
    invitation_id: ResourceId, principal: AdminPrincipalDep, application: ApplicationDep
) -> Response:
    await application.invitations.revoke(principal, invitation_id)
    return Response(status_code=204)


@router.get("/usage")
async def usage(
    principal: AdminPrincipalDep,
    application: ApplicationDep,
    by: UsageGrouping = "user",
    since: date | None = None,
    until: date | None = None,
    user_id: Filter = None,
    model: Filter = None,
) -> UsageReport:
    until = until or utcnow().date()
    since = since or until - timedelta(days=30)
    return await application.usage_reports.report(
        principal, by=by, since=since, until=until, user_id=user_id, model=model
    )


@router.get("/models")
async def list_model_entries(principal: AdminPrincipalDep, application: ApplicationDep) -> ModelEntryList:
    return ModelEntryList(data=await application.catalog.list_entries(principal))


@router.post("/models", status_code=201)
async def create_model_entry(
    body: ModelEntryCreate, principal: AdminPrincipalDep, application: ApplicationDep
) -> ModelEntryOut:
    return await application.catalog.create_entry(principal, body)


@router.get("/models/{entry_id}")
async def get_model_entry(
    entry_id: ResourceId, principal: AdminPrincipalDep, application: ApplicationDep
) -> ModelEntryOut:
    return await application.catalog.get_entry(principal, entry_id)


@router.patch("/models/{entry_id}")
async def update_model_entry(
    entry_id: ResourceId, body: ModelEntryUpdate, principal: AdminPrincipalDep, application: ApplicationDep
) -> ModelEntryOut:
    return await application.catalog.update_entry(principal, entry_id, body)


@router.delete("/models/{entry_id}", status_code=204)
async def delete_model_entry(
    entry_id: ResourceId, principal: AdminPrincipalDep, application: ApplicationDep
) -> Response:
    await application.catalog.delete_entry(principal, entry_id)
    return Response(status_code=204)


@router.get("/audit")
async def audit(
    principal: AdminPrincipalDep,
    application: ApplicationDep,
    user_id: Filter = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AuditPage:
    where = AuditFilter(user_id=user_id, action=action, since=since, until=until)
    return await application.audit.search(principal, where, limit=limit, cursor=cursor)
