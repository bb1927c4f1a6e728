"""Security headers for every HTTP response, API and page alike.

`X-Content-Type-Options: nosniff` keeps a browser from running a JSON error
or an uploaded-looking body as script or HTML; `Referrer-Policy: same-origin`
keeps conversation URLs (`/c/<id>`) from leaking to other sites. HTML
responses also get `X-Frame-Options: DENY` against clickjacking. The page's
Content-Security-Policy is set by `web.py`, which knows what the page loads;
it is not forced on other HTML (FastAPI's `/docs` loads its scripts from a
CDN). A header a route set itself is left as it is.

`RequestContextMiddleware` (`middleware.py`) applies this where it already
rewrites the response start, rather than as one more ASGI layer: a layer
would cost an extra await on every body message of every token stream.
"""

from __future__ import annotations

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_REFERRER = (b"referrer-policy", b"same-origin")
_NO_FRAMES = (b"x-frame-options", b"DENY")


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` (changed in place and returned) with each security header the response lacks."""
    has_nosniff = has_referrer = has_frames = is_html = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-type":
            is_html = value.startswith(b"text/html")
        elif lowered == b"x-content-type-options":
            has_nosniff = True
        elif lowered == b"referrer-policy":
            has_referrer = True
        elif lowered == b"x-frame-options":
            has_frames = True
    if not has_nosniff:
        headers.append(_NOSNIFF)
    if not has_referrer:
        headers.append(_REFERRER)
    if is_html and not has_frames:
        headers.append(_NO_FRAMES)
    return headers
