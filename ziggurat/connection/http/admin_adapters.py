"""LoRA adapters under `/api/admin/models/{model}/adapters`: list, load (POST), unload (DELETE).

Admin only (403 otherwise). A loaded adapter is served as the model
`{model}:{name}`. DELETE answers once the adapter's running streams have
finished; requests for it are refused from the moment DELETE arrives.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from ziggurat.application.catalog.adapters import AdapterAdmin
from ziggurat.connection.http.deps import AdminPrincipalDep, ApplicationDep
from ziggurat.model.adapters import AdapterInfo

router = APIRouter(prefix="/api/admin/models", tags=["admin"])

ModelName = Annotated[str, Path(min_length=1, max_length=200)]
AdapterName = Annotated[str, Path(min_length=1, max_length=64)]


class AdapterLoad(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="Served as `{model}:{name}`.")
    path: str = Field(min_length=1, max_length=4096, description="Absolute path of a peft adapter directory.")


class AdapterOut(BaseModel):
    name: str
    model: str
    path: str
    running: int
    unloading: bool


class AdapterList(BaseModel):
    object: str = "list"
    data: list[AdapterOut]


def _out(info: AdapterInfo) -> AdapterOut:
    return AdapterOut(
        name=info.name, model=info.model, path=info.path, running=info.running, unloading=info.is_unloading
    )


async def get_adapter_admin(request: Request, application: ApplicationDep) -> AdapterAdmin:
    return AdapterAdmin(database=application.database, engines=request.app.state.services.engines)


AdapterAdminDep = Annotated[AdapterAdmin, Depends(get_adapter_admin)]


@router.get("/{model}/adapters")
async def list_adapters(
    model: ModelName, principal: AdminPrincipalDep, admin: AdapterAdminDep
) -> AdapterList:
    return AdapterList(data=[_out(info) for info in admin.list_adapters(principal, model)])


@router.post("/{model}/adapters", status_code=201)
async def load_adapter(
    model: ModelName, body: AdapterLoad, principal: AdminPrincipalDep, admin: AdapterAdminDep
) -> AdapterOut:
    return _out(await admin.load(principal, model, body.name, body.path))


@router.delete("/{model}/adapters/{name}", status_code=204)
async def unload_adapter(
    model: ModelName, name: AdapterName, principal: AdminPrincipalDep, admin: AdapterAdminDep
) -> Response:
    await admin.unload(principal, model, name)
    return Response(status_code=204)
