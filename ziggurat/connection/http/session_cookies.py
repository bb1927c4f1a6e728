"""Cookie sessions for the browser app: the refresh token in an HttpOnly cookie, CSRF by double submit.

A browser asks for a cookie session with `X-Ziggurat-Session: cookie` on
sign-in, registration, password change or refresh. The refresh token then goes
only into `ziggurat_refresh` (HttpOnly, SameSite=Strict, Path=/api/auth), which
script cannot read, and the JSON answer carries an empty `refresh_token`; the
access token stays in the JSON and lives in the page's memory. Other API calls
carry that access token as a Bearer header, so a cookie never authorises them
and they need no CSRF defence.

Refresh and sign-out without a token in the body spend the cookie, and then
the request must prove it comes from our own page: `X-CSRF-Token` equal to the
readable `ziggurat_csrf` cookie (another site can make the browser send our
cookies but cannot read them), and an `Origin`, when sent, that is ours.
SameSite=Strict already stops most cross-site sends; these checks hold where it
does not (old browsers, same-site subdomains). API clients that put
`refresh_token` in the body never touch any of this.

`Secure` follows the request's scheme, which uvicorn takes from
`X-Forwarded-Proto` only for the proxies it trusts (`--forwarded-allow-ips`),
or `ZIGGURAT_WEB__COOKIE_SECURE`.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ziggurat.application.auth.schemas import TokenPair
from ziggurat.config import WebSettings
from ziggurat.connection.http.deps import ServicesDep
from ziggurat.errors import Forbidden, Unauthenticated

REFRESH_COOKIE = "ziggurat_refresh"
CSRF_COOKIE = "ziggurat_csrf"
REFRESH_COOKIE_PATH = "/api/auth"
CSRF_COOKIE_PATH = "/"
SESSION_HEADER = "x-ziggurat-session"
CSRF_HEADER = "x-csrf-token"
CSRF_FAILED = "csrf_failed"
_MAX_COOKIE_CHARS = 256


class RefreshBody(BaseModel):
    """`refresh_token` for API clients; absent (or no body at all) for the browser's cookie session."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: str | None = Field(default=None, min_length=1, max_length=256)


class CookieSession:
    """The cookie side of one request: whether it wants cookies, and setting, checking and clearing them."""

    def __init__(self, request: Request, settings: WebSettings) -> None:
        self._request = request
        self._settings = settings

    @property
    def is_requested(self) -> bool:
        return self._request.headers.get(SESSION_HEADER, "").strip().lower() == "cookie"

    @property
    def is_secure(self) -> bool:
        if self._settings.cookie_secure is not None:
            return self._settings.cookie_secure
        return self._request.url.scheme == "https"

    def check_origin(self) -> None:
        """Refuse a request whose `Origin` is another site (absent is fine: not every browser sends it)."""
        origin = self._request.headers.get("origin")
        if origin is None:
            return
        own = f"{self._request.url.scheme}://{self._request.headers.get('host', '')}"
        allowed = {own.lower(), *(trusted.rstrip("/").lower() for trusted in self._settings.trusted_origins)}
        if origin.rstrip("/").lower() not in allowed:
            raise Forbidden(
                "This request came from another site; cookie sessions are same-origin only.", code=CSRF_FAILED
            )

    def refresh_token(self) -> str:
        """The refresh token from the cookie, once the request has proved it is our page's."""
        token = self.stored_refresh_token()
        if token is None:
            raise Unauthenticated("No session cookie; sign in again.")
        self.check_csrf()
        return token

    def stored_refresh_token(self) -> str | None:
        token = self._request.cookies.get(REFRESH_COOKIE)
        return token if token and len(token) <= _MAX_COOKIE_CHARS else None

    def check_csrf(self) -> None:
        self.check_origin()
        sent = self._request.headers.get(CSRF_HEADER, "")
        expected = self._request.cookies.get(CSRF_COOKIE, "")
        if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Forbidden(
                f"Missing or wrong {CSRF_HEADER} header; send the value of the {CSRF_COOKIE} cookie.",
                code=CSRF_FAILED,
            )

    def deliver(self, response: Response, tokens: TokenPair, *, is_forced: bool = False) -> TokenPair:
        """`tokens` as the JSON answer; in a cookie session, the refresh token goes to a cookie instead."""
        if not (is_forced or self.is_requested):
            return tokens
        self.start(response, tokens)
        return tokens.model_copy(update={"refresh_token": ""})

    def start(self, response: Response, tokens: TokenPair) -> None:
        """Set both cookies (a new CSRF token each time, so a leaked one dies with its session's turn)."""
        secure = self.is_secure
        response.set_cookie(
            REFRESH_COOKIE,
            tokens.refresh_token,
            max_age=tokens.refresh_expires_in,
            path=REFRESH_COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        response.set_cookie(
            CSRF_COOKIE,
            secrets.token_urlsafe(32),
            max_age=tokens.refresh_expires_in,
            path=CSRF_COOKIE_PATH,
            httponly=False,
            samesite="strict",
            secure=secure,
        )

    def clear(self, response: Response) -> None:
        secure = self.is_secure
        for name, path, httponly in (
            (REFRESH_COOKIE, REFRESH_COOKIE_PATH, True),
            (CSRF_COOKIE, CSRF_COOKIE_PATH, False),
        ):
            response.delete_cookie(name, path=path, secure=secure, httponly=httponly, samesite="strict")


async def get_cookie_session(request: Request, services: ServicesDep) -> CookieSession:
    return CookieSession(request, services.settings.web)


CookieSessionDep = Annotated[CookieSession, Depends(get_cookie_session)]
