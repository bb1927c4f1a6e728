"""Accounts, sessions and API keys under `/api/auth` and `/api/keys`.

Password sign-in answers `429` with `Retry-After` while an account or client
address is locked out (see `application/auth/lockout.py`). OIDC sign-in is two
browser hops: `GET /api/auth/oidc/login` redirects to the provider and keeps
the sign-in's state in an HttpOnly cookie scoped to the callback path;
`GET /api/auth/oidc/callback` finishes it and answers with our token pair as
JSON, or, for a login the web app started with `?next=/path`, sets the cookie
session and redirects there; such a login that fails lands on the web app's
`/login?error=<code>` instead of a JSON error (`web_oidc.py`).

The browser app uses cookie sessions (`session_cookies.py`): with
`X-Ziggurat-Session: cookie` the refresh token goes into an HttpOnly cookie
rather than the JSON, and refresh and sign-out without a body spend that
cookie under a CSRF check. Bodies with `refresh_token` work as they always did.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Cookie, Path, Query
from starlette.responses import RedirectResponse, Response

from ziggurat.application.auth.oidc import OidcService, is_safe_next_path
from ziggurat.application.auth.oidc_provider import SIGN_IN_FAILED
from ziggurat.application.auth.principal import SCOPE_ADMIN
from ziggurat.application.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    AuthProviders,
    Credentials,
    OidcProviderOut,
    PasswordChange,
    Registration,
    RegistrationRequest,
    TokenPair,
)
from ziggurat.application.container import Application
from ziggurat.application.users.schemas import UserOut
from ziggurat.connection.http.deps import ApplicationDep, ClientIpDep, PrincipalDep
from ziggurat.connection.http.session_cookies import CookieSessionDep, RefreshBody
from ziggurat.connection.http.web_oidc import login_failed
from ziggurat.errors import NotFound, Unauthenticated, UpstreamFailed, ZigguratError

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
async def register(
    body: RegistrationRequest, application: ApplicationDep, cookies: CookieSessionDep, response: Response
) -> Registration:
    if cookies.is_requested:
        cookies.check_origin()
    registration = await application.auth.register(body.email, body.password, invitation=body.invitation)
    return registration.model_copy(update={"tokens": cookies.deliver(response, registration.tokens)})


@router.post("/auth/login")
async def login(
    body: Credentials,
    application: ApplicationDep,
    client_ip: ClientIpDep,
    cookies: CookieSessionDep,
    response: Response,
) -> TokenPair:
    if cookies.is_requested:
        cookies.check_origin()  # a cross-site page must not sign the browser into its own account
    tokens = await application.auth.login(body.email, body.password, client_ip=client_ip)
    return cookies.deliver(response, tokens)


@router.post("/auth/refresh")
async def refresh(
    application: ApplicationDep,
    cookies: CookieSessionDep,
    response: Response,
    body: RefreshBody | None = None,
) -> TokenPair:
    """Spend the body's refresh token (API clients) or, without one, the session cookie (browser)."""
    if body is not None and body.refresh_token is not None:
        return cookies.deliver(response, await application.auth.refresh(body.refresh_token))
    tokens = await application.auth.refresh(cookies.refresh_token())
    return cookies.deliver(response, tokens, is_forced=True)


@router.post("/auth/logout", status_code=204)
async def logout(
    application: ApplicationDep, cookies: CookieSessionDep, body: RefreshBody | None = None
) -> Response:
    """End the session of the body's refresh token, or of the session cookie (then clear both cookies)."""
    response = Response(status_code=204)
    if body is not None and body.refresh_token is not None:
        await application.auth.logout(body.refresh_token)
        if cookies.is_requested:
            cookies.clear(response)
        return response
    if cookies.stored_refresh_token() is not None:
        await application.auth.logout(cookies.refresh_token())
    cookies.clear(response)
    return response


@router.post("/auth/logout-all", status_code=204)
async def logout_all(principal: PrincipalDep, application: ApplicationDep) -> Response:
    await application.auth.logout_all(principal)
    return Response(status_code=204)


@router.post("/auth/password")
async def change_password(
    body: PasswordChange,
    principal: PrincipalDep,
    application: ApplicationDep,
    client_ip: ClientIpDep,
    cookies: CookieSessionDep,
    response: Response,
) -> TokenPair:
    tokens = await application.auth.change_password(
        principal, body.current_password, body.new_password, client_ip=client_ip
    )
    return cookies.deliver(response, tokens)


class MeOut(UserOut):
    """The signed-in user, and whether this session may use the admin pages (the web app's menu)."""

    is_admin: bool


@router.get("/auth/me")
async def me(principal: PrincipalDep, application: ApplicationDep) -> MeOut:
    user = await application.users.me(principal)
    return MeOut(**user.model_dump(), is_admin=principal.has_scope(SCOPE_ADMIN))


@router.get("/auth/oidc/login", response_model=None)
async def oidc_login(
    application: ApplicationDep,
    next_path: Annotated[str | None, Query(alias="next", max_length=2048)] = None,
) -> Response:
    """Send the browser to the provider; `next` (a path here) makes the callback redirect there."""
    try:
        started = await _oidc(application).start_login(next_path=next_path)
    except UpstreamFailed as exc:
        if next_path is None or not is_safe_next_path(next_path):
            raise
        return login_failed(exc, cookie=(OIDC_COOKIE, OIDC_PATH))  # the web app's page, not JSON
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


@router.get("/auth/oidc/callback", response_model=None)
async def oidc_callback(
    application: ApplicationDep,
    client_ip: ClientIpDep,
    cookies: CookieSessionDep,
    response: Response,
    code: CallbackParam = None,
    state: CallbackParam = None,
    error: CallbackParam = None,
    state_cookie: Annotated[str | None, Cookie(alias=OIDC_COOKIE, max_length=4096)] = None,
) -> TokenPair | Response:
    response.delete_cookie(OIDC_COOKIE, path=OIDC_PATH)
    service = _oidc(application)
    web_next = service.web_next_path(state_cookie)
    try:
        if error is not None or not code or not state:
            raise Unauthenticated(
                f"The identity provider did not sign you in ({error or 'no code'}); try again.",
                code=SIGN_IN_FAILED,
            )
        signed_in = await service.finish_login(
            code=code, state=state, state_token=state_cookie, client_ip=client_ip
        )
    except ZigguratError as exc:
        if web_next is None:
            raise  # an API client's sign-in: the JSON error
        return login_failed(exc, provider_error=error, cookie=(OIDC_COOKIE, OIDC_PATH))
    if signed_in.next_path is None:
        return cookies.deliver(response, signed_in.tokens)
    redirect = RedirectResponse(signed_in.next_path, status_code=302)
    redirect.delete_cookie(OIDC_COOKIE, path=OIDC_PATH)
    cookies.start(redirect, signed_in.tokens)
    return redirect


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
