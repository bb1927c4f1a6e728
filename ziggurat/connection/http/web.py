"""Serves the web app (SPA) from the API process: its page at `/` and client routes, files under `/static/`.

`GET /` and any other GET path outside the API whose last segment has no file
extension (`/c/<id>`, `/admin/users`, `/login`) answer `index.html`: the app
routes on the client. The page is `no-cache` (revalidated with its ETag every
time, so a release shows at the next load) and carries the Content-Security-
Policy; everything it loads lives at `/static/<version>/<path>`, cached for a
year as `immutable`, because a new release has a new version. An unknown file
or a stale version is a JSON 404, never the page: a script tag that received
HTML would fail in a confusing way.

The client route matches nothing under `/api`, `/v1`, `/static` and the
operational endpoints, so an unknown API path stays a JSON 404 and no API
method answer changes. Both routes are added after every other route, so they
shadow nothing. Files come from `web_assets.WebBundle`, in memory.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from ziggurat.config import WebSettings
from ziggurat.connection.http.web_assets import STATIC_PREFIX, Asset, WebBundle
from ziggurat.errors import NotFound
from ziggurat.telemetry import get_logger

log = get_logger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
PAGE_CACHE_CONTROL = "no-cache"
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
PACKAGED_ROOT = Path(__file__).resolve().parents[2] / "web"
RESERVED_ROOTS = frozenset(
    {"api", "v1", "static", "healthz", "readyz", "metrics", "docs", "redoc", "openapi.json"}
)


def is_client_route(path: str) -> bool:
    """Whether a GET of `path` is the app's own navigation (answered with the page)."""
    # Judged without a trailing slash, so Starlette's slash redirect never turns `/x.ico` into `/x.ico/`.
    trimmed = path.strip("/")
    first, _, _ = trimmed.partition("/")
    return first not in RESERVED_ROOTS and "." not in trimmed.rsplit("/", 1)[-1]


class _ClientRoute(Route):
    """`/{path:path}` restricted to client routes, so other paths fall through to the JSON 404."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not is_client_route(scope["path"]):
            return Match.NONE, {}
        return super().matches(scope)


class WebApp:
    """The two endpoints over one loaded bundle."""

    def __init__(self, bundle: WebBundle) -> None:
        self.bundle = bundle

    async def page(self, request: Request) -> Response:
        assert self.bundle.index is not None
        headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY"}
        return _serve(request, self.bundle.index, PAGE_CACHE_CONTROL, headers)

    async def asset(self, request: Request) -> Response:
        version: str = request.path_params["version"]
        path: str = request.path_params["path"]
        asset = self.bundle.assets.get(path)
        if version != self.bundle.version or asset is None:
            raise NotFound(f"No web app file {path!r} in version {version!r} (reload the page).")
        return _serve(request, asset, ASSET_CACHE_CONTROL, {})


def _serve(request: Request, asset: Asset, cache_control: str, extra: dict[str, str]) -> Response:
    """The asset (gzipped when the client takes it), or `304` when the client already holds it."""
    use_gzip = asset.gzipped is not None and _accepts_gzip(request.headers.get("accept-encoding", ""))
    etag = asset.gzip_etag if use_gzip else asset.etag
    headers = {"Cache-Control": cache_control, "ETag": etag, **extra}
    if asset.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
    if _matches(request.headers.get("if-none-match"), (asset.etag, asset.gzip_etag)):
        return Response(status_code=304, headers=headers)
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    body = asset.gzipped if use_gzip and asset.gzipped is not None else asset.body
    return Response(body, media_type=asset.media_type, headers=headers)


def _matches(if_none_match: str | None, etags: tuple[str, ...]) -> bool:
    """`If-None-Match` uses the weak comparison: a `W/` prefix (added by some proxies) still matches."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    offered = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return any(etag in offered for etag in etags)


def _accepts_gzip(accept_encoding: str) -> bool:
    for coding in accept_encoding.lower().split(","):
        name, _, parameters = coding.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            return parameters.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def install_web(app: FastAPI, settings: WebSettings) -> WebBundle | None:
    """Add the web app's routes to `app`; call it after every other route is included.

    Returns the loaded bundle (None when the app is disabled). A missing page is
    logged, not fatal: the API serves on without its web front end.
    """
    if not settings.enabled:
        return None
    root = settings.root or PACKAGED_ROOT
    bundle = WebBundle.load(root)
    web = WebApp(bundle)
    # Plain Starlette routes, appended directly: include_router would rebuild them without `matches`.
    app.router.routes.append(
        Route(
            f"{STATIC_PREFIX}/{{version}}/{{path:path}}", web.asset, methods=["GET"], include_in_schema=False
        )
    )
    if bundle.index is None:
        log.warning("web_app_missing", root=str(root))
    else:
        app.router.routes.append(
            _ClientRoute("/{path:path}", web.page, methods=["GET"], include_in_schema=False)
        )
    log.info("web_app_loaded", version=bundle.version, files=len(bundle.assets))
    return bundle
