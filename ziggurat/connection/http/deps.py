"""FastAPI dependencies: collaborators come from `app.state.services`, never globals.

`Services` is filled once by the lifespan in `app.py`; routes ask for the one
collaborator they need through the `Annotated` aliases below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from ziggurat.application.auth.principal import SCOPE_ADMIN, SCOPE_CHAT, Principal
from ziggurat.application.container import Application
from ziggurat.config import Settings
from ziggurat.connection.broker.broker import Broker
from ziggurat.errors import Forbidden, NotFound, Unauthenticated
from ziggurat.service.generation import GenerationService
from ziggurat.service.health import HealthService
from ziggurat.service.lifecycle import Draining
from ziggurat.service.metrics import Metrics
from ziggurat.telemetry import user_id_var

if TYPE_CHECKING:
    from ziggurat.connection.worker import Worker
    from ziggurat.model.engine import Engine


@dataclass(slots=True)
class Services:
    settings: Settings
    metrics: Metrics
    broker: Broker
    generation: GenerationService
    health: HealthService
    application: Application | None
    engines: list[Engine] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    draining: Draining = field(default_factory=Draining)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a
# thread pool, which costs a thread hop per dependency per request.
async def get_services(request: Request) -> Services:
    return _services(request)


async def get_generation(request: Request) -> GenerationService:
    return _services(request).generation


async def get_metrics(request: Request) -> Metrics:
    return _services(request).metrics


ServicesDep = Annotated[Services, Depends(get_services)]
GenerationDep = Annotated[GenerationService, Depends(get_generation)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def get_application(request: Request) -> Application:
    application = _services(request).application
    if application is None:  # a worker process: its app has no application routes
        raise NotFound("This process is a worker; it serves no application routes.")
    return application


ApplicationDep = Annotated[Application, Depends(get_application)]


async def get_principal(request: Request, application: ApplicationDep) -> Principal:
    """The caller, from `Authorization: Bearer <access token or API key>`; 401 otherwise."""
    return await _authenticate(request, application)


async def _authenticate(request: Request, application: Application) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated(
            "Missing Authorization header; send `Authorization: Bearer <access token or API key>`."
        )
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthenticated("The Authorization header must be `Bearer <access token or API key>`.")
    principal = await application.authenticator.authenticate(credentials.strip())
    user_id_var.set(principal.user_id)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_permission(permission: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that admits principals whose role and credential grant `permission` (else 403).

    Route-level RBAC is this and nothing else; model access is `ModelCatalog`'s.
    """

    async def check(principal: PrincipalDep) -> Principal:
        if not principal.has_scope(permission):
            raise Forbidden(f"This credential does not have the `{permission}` permission.")
        return principal

    return check


require_chat_scope = require_permission(SCOPE_CHAT)
ChatPrincipalDep = Annotated[Principal, Depends(require_chat_scope)]
AdminPrincipalDep = Annotated[Principal, Depends(require_permission(SCOPE_ADMIN))]


@dataclass(slots=True, frozen=True)
class ChatCall:
    """What a generation route needs, resolved in one call instead of four dependencies.

    FastAPI resolves each dependency through its own solver step; on `/v1/chat/completions`
    the four (application, principal, chat permission, generation) were ~5% of a gateway's
    CPU per request (bench/gateway_overhead.py, 2-token answers), so that route calls
    `get_chat_call` itself. Same checks, same errors.
    """

    principal: Principal
    application: Application
    generation: GenerationService


async def get_chat_call(request: Request) -> ChatCall:
    services = _services(request)
    application = await get_application(request)
    principal = await require_chat_scope(await _authenticate(request, application))
    return ChatCall(principal, application, services.generation)


async def get_client_ip(request: Request) -> str | None:
    """The peer address (behind a proxy, run uvicorn with --proxy-headers so this is the client's)."""
    return request.client.host if request.client else None


ClientIpDep = Annotated[str | None, Depends(get_client_ip)]
