"""A failed single sign-on that the web app started ends on its login page, not on a JSON error.

The browser reaches the OIDC endpoints by navigation, so a JSON error body would
be the whole page a person sees. When the sign-in carries the web app's `next`
path (in the signed state token, or as the login's own parameter), a failure
answers `302` to `/login?error=<code>` and the login view shows a translated
sentence for the code. API clients that start a sign-in without `next` keep the
JSON errors. The codes are a small fixed set, so the query string never carries
server text into the page.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode

from starlette.responses import RedirectResponse

from ziggurat.errors import Forbidden, InvalidRequest, UpstreamFailed, ZigguratError
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

LOGIN_PAGE: Final = "/login"
DENIED: Final = "sso_denied"
"""The provider sent the person back without signing them in (they cancelled, or it refused)."""
EXPIRED: Final = "sso_expired"
"""The sign-in's state is missing, altered or too old: start again."""
NOT_ALLOWED: Final = "sso_not_allowed"
"""No verified email, or registration is closed to this person."""
UNAVAILABLE: Final = "sso_unavailable"
"""The provider could not be reached or answered nonsense."""
FAILED: Final = "sso_failed"
"""Anything else (an ID token that does not verify, a disabled account)."""


def failure_code(exc: ZigguratError, *, provider_error: str | None = None) -> str:
    if provider_error is not None:
        return DENIED
    if isinstance(exc, UpstreamFailed):
        return UNAVAILABLE
    if isinstance(exc, Forbidden):
        return NOT_ALLOWED
    if isinstance(exc, InvalidRequest) and exc.param == "state":
        return EXPIRED
    return FAILED


def login_failed(
    exc: ZigguratError, *, provider_error: str | None = None, cookie: tuple[str, str]
) -> RedirectResponse:
    """`302` to the login page with the failure's code, clearing the sign-in's state `cookie` (name, path)."""
    code = failure_code(exc, provider_error=provider_error)
    detail = provider_error[:100] if provider_error else None
    log.info("oidc_sign_in_failed", code=code, error_type=type(exc).__name__, provider_error=detail)
    redirect = RedirectResponse(f"{LOGIN_PAGE}?{urlencode({'error': code})}", status_code=302)
    name, path = cookie
    redirect.delete_cookie(name, path=path)
    return redirect
