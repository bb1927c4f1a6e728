"""Security headers on every HTTP response, API and page alike.

`X-Content-Type-Options: nosniff` keeps a browser from running a JSON error
or an uploaded-looking body as script or HTML; `Referrer-Policy: same-origin`
keeps conversation URLs (`/c/<id>`) from leaking to other sites. HTML
responses also get `X-Frame-Options: DENY` against clickjacking. The page's
Content-Security-Policy is set by `web.py`, which knows what the page loads;
it is not forced on other HTML (FastAPI's `/docs` loads its scripts from a
CDN). A header a route set itself is left as it is. Plain ASGI, like
`middleware.py`, so streams pass through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALWAYS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"))
HTML_ONLY = ((b"x-frame-options", b"DENY"),)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    present = {name.lower() for name, _ in headers}
    content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
    wanted = ALWAYS + HTML_ONLY if content_type.startswith(b"text/html") else ALWAYS
    headers.extend((name, value) for name, value in wanted if name not in present)
    return headers
