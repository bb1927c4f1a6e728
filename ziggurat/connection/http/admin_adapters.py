"""LoRA adapters under `/api/admin/models/{model}/adapters`: list, load (POST), unload (DELETE).

Admin only (403 otherwise). A loaded adapter is served as the model
`{model}:{name}`. In one process POST answers 201 once the adapter is loaded,
and DELETE answers once its running streams have finished; requests for it
are refused from the moment DELETE arrives.

On a gateway of a split deployment the desired adapters are recorded in Redis
and the workers load them (`ziggurat.connection.adapter_sync`). POST answers
201 once this gateway routes `{model}:{name}`, or 202 when the workers have not
all confirmed within a few seconds (still loading, or the path failed there:
`workers` in the answer, and in GET, says which). DELETE answers 204 once
this gateway refuses new requests for it; running streams still finish.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from ziggurat.application.catalog.adapters import AdapterAdmin, AdapterStatus, SharedAdapters
from ziggurat.connection.http.deps import AdminPrincipalDep, ApplicationDep

router = APIRouter(prefix="/api/admin/models", tags=["admin"])

ModelName = Annotated[str, Path(min_length=1, max_length=200)]
AdapterName = Annotated[str, Path(min_length=1, max_length=64)]


class AdapterLoad(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="Served as `{model}:{name}`.")
    path: str = Field(min_length=1, max_length=4096, description="Absolute path of a peft adapter directory.")


class WorkerAdapterOut(BaseModel):
    worker: str
    state: str = Field(description="loaded, unloading, error or pending.")
    error: str | None = None


class AdapterOut(BaseModel):
    name: str
    model: str
    path: str
    running: int
    unloading: bool
    workers: list[WorkerAdapterOut] = Field(
        default_factory=list, description="Split deployments: the adapter on each worker of the base model."
    )


class AdapterList(BaseModel):
    object: str = "list"
    data: list[AdapterOut]


def _out(status: AdapterStatus) -> AdapterOut:
    return AdapterOut(
        name=status.name,
        model=status.model,
        path=status.path,
        running=status.running,
        unloading=status.is_unloading,
        workers=[
            WorkerAdapterOut(worker=state.worker, state=state.state, error=state.error)
            for state in status.workers
        ],
    )


async def get_adapter_admin(request: Request, application: ApplicationDep) -> AdapterAdmin:
    services = request.app.state.services
    shared: SharedAdapters | None = getattr(request.app.state, "shared_adapters", None)
    return AdapterAdmin(
        database=application.database,
        engines=services.engines,
        shared=shared,
        served=lambda: [model.name for model in services.generation.list_models()],
    )


AdapterAdminDep = Annotated[AdapterAdmin, Depends(get_adapter_admin)]


@router.get("/{model}/adapters")
async def list_adapters(
    model: ModelName, principal: AdminPrincipalDep, admin: AdapterAdminDep
) -> AdapterList:
    return AdapterList(data=[_out(status) for status in await admin.list_adapters(principal, model)])


@router.post("/{model}/adapters", status_code=201, responses={202: {"model": AdapterOut}})
async def load_adapter(
    model: ModelName,
    body: AdapterLoad,
    principal: AdminPrincipalDep,
    admin: AdapterAdminDep,
    response: Response,
) -> AdapterOut:
    status, is_served = await admin.load(principal, model, body.name, body.path)
    if not is_served:
        response.status_code = 202
    return _out(status)


@router.delete("/{model}/adapters/{name}", status_code=204)
async def unload_adapter(
    model: ModelName, name: AdapterName, principal: AdminPrincipalDep, admin: AdapterAdminDep
) -> Response:
    await admin.unload(principal, model, name)
    return Response(status_code=204)
