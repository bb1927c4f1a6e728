"""Accounts, sessions and API keys under `/api/auth` and `/api/keys`.

Password sign-in answers `429` with `Retry-After` while an account or client
address is locked out (see `application/auth/lockout.py`). OIDC sign-in is two
browser hops: `GET /api/auth/oidc/login` redirects to the provider and keeps
the sign-in's state in an HttpOnly cookie scoped to the callback path;
`GET /api/auth/oidc/callback` finishes it and answers with our token pair as
JSON (a web front end can wrap this later; see docs/architecture.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Cookie, Path, Query
from starlette.responses import RedirectResponse, Response

from ziggurat.application.auth.oidc import OidcService
from ziggurat.application.auth.oidc_provider import SIGN_IN_FAILED
from ziggurat.application.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    AuthProviders,
    Credentials,
    OidcProviderOut,
    PasswordChange,
    RefreshRequest,
    Registration,
    RegistrationRequest,
    TokenPair,
)
from ziggurat.application.container import Application
from ziggurat.application.users.schemas import UserOut
from ziggurat.connection.http.deps import ApplicationDep, ClientIpDep, PrincipalDep
from ziggurat.errors import NotFound, Unauthenticated

router = APIRouter(prefix="/api", tags=["auth"])

OIDC_COOKIE = "ziggurat_oidc"
OIDC_PATH = "/api/auth/oidc"
ResourceId = Annotated[str, Path(min_length=1, max_length=64)]
CallbackParam = Annotated[str | None, Query(max_length=4096)]


@router.get("/auth/providers")
async def providers(application: ApplicationDep) -> AuthProviders:
    oidc = application.oidc
    button = OidcProviderOut(name=oidc.button_name, login_url=f"{OIDC_PATH}/login") if oidc else None
    return AuthProviders(registration_open=application.users.is_registration_open, oidc=button)


@router.post("/auth/register", status_code=201)
async def register(body: RegistrationRequest, application: ApplicationDep) -> Registration:
    return await application.auth.register(body.email, body.password, invitation=body.invitation)


@router.post("/auth/login")
async def login(body: Credentials, application: ApplicationDep, client_ip: ClientIpDep) -> TokenPair:
    return await application.auth.login(body.email, body.password, client_ip=client_ip)


@router.post("/auth/refresh")
async def refresh(body: RefreshRequest, application: ApplicationDep) -> TokenPair:
    return await application.auth.refresh(body.refresh_token)


@router.post("/auth/logout", status_code=204)
async def logout(body: RefreshRequest, application: ApplicationDep) -> Response:
    await application.auth.logout(body.refresh_token)
    return Response(status_code=204)


@router.post("/auth/logout-all", status_code=204)
async def logout_all(principal: PrincipalDep, application: ApplicationDep) -> Response:
    await application.auth.logout_all(principal)
    return Response(status_code=204)


@router.post("/auth/password")
async def change_password(
    body: PasswordChange, principal: PrincipalDep, application: ApplicationDep, client_ip: ClientIpDep
) -> TokenPair:
    return await application.auth.change_password(
        principal, body.current_password, body.new_password, client_ip=client_ip
    )


@router.get("/auth/me")
async def me(principal: PrincipalDep, application: ApplicationDep) -> UserOut:
    return await application.users.me(principal)


@router.get("/auth/oidc/login", response_model=None)
async def oidc_login(application: ApplicationDep) -> Response:
    started = await _oidc(application).start_login()
    response = RedirectResponse(started.authorization_url, status_code=302)
    response.set_cookie(
        OIDC_COOKIE,
        started.state_token,
        max_age=started.max_age_s,
        path=OIDC_PATH,
        httponly=True,
        samesite="lax",
        secure=started.authorization_url.startswith("https://"),
    )
    return response


@router.get("/auth/oidc/callback")
async def oidc_callback(
    application: ApplicationDep,
    client_ip: ClientIpDep,
    response: Response,
    code: CallbackParam = None,
    state: CallbackParam = None,
    error: CallbackParam = None,
    state_cookie: Annotated[str | None, Cookie(alias=OIDC_COOKIE, max_length=4096)] = None,
) -> TokenPair:
    response.delete_cookie(OIDC_COOKIE, path=OIDC_PATH)
    if error is not None or not code or not state:
        raise Unauthenticated(
            f"The identity provider did not sign you in ({error or 'no code'}); try again.",
            code=SIGN_IN_FAILED,
        )
    return await _oidc(application).finish_login(
        code=code, state=state, state_token=state_cookie, client_ip=client_ip
    )


def _oidc(application: Application) -> OidcService:
    if application.oidc is None:
        raise NotFound("Single sign-on is not configured on this server.")
    return application.oidc


@router.post("/keys", status_code=201)
async def create_key(
    body: ApiKeyCreate, principal: PrincipalDep, application: ApplicationDep
) -> ApiKeyCreated:
    return await application.api_keys.create(principal, body)


@router.get("/keys")
async def list_keys(principal: PrincipalDep, application: ApplicationDep) -> ApiKeyList:
    return ApiKeyList(data=await application.api_keys.list_keys(principal))


@router.delete("/keys/{key_id}", status_code=204)
async def revoke_key(key_id: ResourceId, principal: PrincipalDep, application: ApplicationDep) -> Response:
    await application.api_keys.revoke(principal, key_id)
    return Response(status_code=204)
