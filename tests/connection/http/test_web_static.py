"""The web app served by the API process: the page on client routes, versioned immutable assets, 404s."""

from __future__ import annotations

import gzip
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.connection.http.inprocess import app_client, app_settings, assert_error
from ziggurat.app import build_app
from ziggurat.connection.http.web import CONTENT_SECURITY_POLICY, is_client_route
from ziggurat.connection.http.web_assets import WebBundle

INDEX = """<!doctype html><html><head>
<link rel="stylesheet" href="{{STATIC}}/styles.css">
<script type="module" src="{{STATIC}}/app.js"></script>
</head><body></body></html>"""
APP_JS = "import { run } from './chat.js';\nrun();\n"
BIG_JS = "export function run() {\n" + "  console.log('a line that repeats');\n" * 200 + "}\n"


def _write_root(root: Path) -> Path:
    (root / "vendor").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "app.js").write_text(APP_JS)
    (root / "chat.js").write_text(BIG_JS)
    (root / "styles.css").write_text("body { margin: 0; }\n")
    (root / "vendor" / "marked.mjs").write_text("export const marked = 1;\n")
    (root / ".secret").write_text("not for the web")
    return root


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'ziggurat.db'}"


@pytest.fixture
def web_root(tmp_path: Path) -> Path:
    return _write_root(tmp_path / "web")


@pytest.fixture
async def client(tmp_path: Path, web_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings(tmp_path, _sqlite(tmp_path), web={"root": str(web_root)})
    async with app_client(build_app(settings)) as client:
        yield client


def _static_prefix(page: str) -> str:
    match = re.search(r'src="(/static/[0-9a-f]+)/app\.js"', page)
    assert match, page
    return match.group(1)


@pytest.mark.parametrize("path", ["/", "/c/abc", "/admin/users", "/login"])
async def test_client_routes_answer_the_page_with_its_policy_and_no_cache(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-cache"
    assert "{{STATIC}}" not in response.text
    prefix = _static_prefix(response.text)
    assert f'href="{prefix}/styles.css"' in response.text
    revalidated = await client.get(path, headers={"If-None-Match": response.headers["etag"]})
    assert revalidated.status_code == 304 and revalidated.content == b""
    head = await client.head(path)
    assert head.status_code == 200 and head.content == b""


async def test_assets_are_immutable_typed_and_revalidated_with_their_etag(
    client: httpx.AsyncClient, web_root: Path
) -> None:
    prefix = _static_prefix((await client.get("/")).text)
    script = await client.get(f"{prefix}/app.js")
    assert script.status_code == 200 and script.text == APP_JS
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = script.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    for offered in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get(f"{prefix}/app.js", headers={"If-None-Match": offered})
        assert again.status_code == 304, offered
        assert again.content == b"" and again.headers["etag"] == etag
    assert (await client.get(f"{prefix}/app.js", headers={"If-None-Match": '"other"'})).status_code == 200
    module = await client.get(f"{prefix}/vendor/marked.mjs")
    assert module.headers["content-type"] == "text/javascript; charset=utf-8"
    assert (await client.get(f"{prefix}/styles.css")).headers["content-type"] == "text/css; charset=utf-8"


async def test_large_text_assets_are_gzipped_for_clients_that_accept_it(client: httpx.AsyncClient) -> None:
    prefix = _static_prefix((await client.get("/")).text)
    zipped = await client.get(f"{prefix}/chat.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.text == BIG_JS  # httpx decodes it
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert int(zipped.headers["content-length"]) < len(BIG_JS) / 5
    plain = await client.get(f"{prefix}/chat.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == BIG_JS
    assert plain.headers["etag"] != zipped.headers["etag"]  # two representations, two strong validators
    refused = await client.get(f"{prefix}/chat.js", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


async def test_unknown_files_stale_versions_and_hidden_files_are_json_404s(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    prefix = _static_prefix((await client.get("/")).text)
    (tmp_path / "outside.js").write_text("secret")
    for path in (
        f"{prefix}/missing.js",
        "/static/0123456789ab/app.js",
        f"{prefix}/.secret",
        f"{prefix}/%2e%2e/outside.js",
        f"{prefix}/",
        "/static/",
        "/favicon.ico",
        "/c/abc/file.txt",
    ):
        response = await client.get(path)
        assert response.status_code == 404, (path, response.status_code, response.headers)
        assert_error(response, 404, "not_found_error")


async def test_api_and_operational_paths_are_never_shadowed(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/nope"), 404)
    assert_error(await client.get("/api"), 404)
    assert_error(await client.get("/v1/nope"), 404)
    assert_error(await client.post("/api/nope", json={}), 404)
    assert_error(await client.get("/v1/models"), 401)
    assert (await client.get("/healthz")).json()["status"] == "ok"
    assert (await client.get("/metrics")).headers["content-type"].startswith("text/plain")
    assert_error(await client.post("/c/abc"), 405)  # a client route is a page, not an endpoint


async def test_the_page_is_not_served_when_the_web_app_is_disabled(tmp_path: Path, web_root: Path) -> None:
    settings = app_settings(tmp_path, _sqlite(tmp_path), web={"enabled": False, "root": str(web_root)})
    async with app_client(build_app(settings)) as client:
        assert_error(await client.get("/"), 404)
        assert_error(await client.get("/c/abc"), 404)


async def test_a_root_without_a_page_serves_its_files_but_no_page(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    root.mkdir()
    (root / "app.js").write_text(APP_JS)
    version = WebBundle.load(root).version
    settings = app_settings(tmp_path, _sqlite(tmp_path), web={"root": str(root)})
    async with app_client(build_app(settings)) as client:
        assert_error(await client.get("/"), 404)
        assert (await client.get(f"/static/{version}/app.js")).text == APP_JS


def test_the_version_changes_with_any_file_and_ignores_hidden_ones(tmp_path: Path) -> None:
    root = _write_root(tmp_path / "web")
    first = WebBundle.load(root)
    assert re.fullmatch(r"[0-9a-f]{12}", first.version)
    assert set(first.assets) == {"index.html", "app.js", "chat.js", "styles.css", "vendor/marked.mjs"}
    (root / ".secret").write_text("changed")
    assert WebBundle.load(root).version == first.version
    (root / "vendor" / "marked.mjs").write_text("export const marked = 2;\n")
    second = WebBundle.load(root)
    assert second.version != first.version
    assert second.index is not None and f"/static/{second.version}/app.js".encode() in second.index.body
    chat = second.assets["chat.js"]
    assert chat.gzipped is not None and gzip.decompress(chat.gzipped) == BIG_JS.encode()
    assert WebBundle.load(tmp_path / "absent").index is None


def test_client_routes_exclude_the_api_and_files() -> None:
    assert all(is_client_route(path) for path in ("/", "/c/0b6f-11", "/admin/users", "/settings/"))
    refused = ("/api", "/api/x", "/v1/models", "/static/x", "/healthz", "/readyz", "/metrics", "/docs")
    assert not any(is_client_route(path) for path in refused)
    assert not is_client_route("/robots.txt") and not is_client_route("/c/a.b")
    assert not is_client_route("/favicon.ico/") and not is_client_route("/api/")


async def test_the_packaged_app_is_served_and_every_asset_it_names_resolves(tmp_path: Path) -> None:
    async with app_client(build_app(app_settings(tmp_path, _sqlite(tmp_path)))) as client:
        page = await client.get("/")
        assert page.status_code == 200 and "{{STATIC}}" not in page.text
        named = re.findall(r'(?:src|href)="(/static/[0-9a-f]+/[^"]+)"', page.text)
        assert named, page.text
        for path in named:
            asset = await client.get(path)
            assert asset.status_code == 200, path
            assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
